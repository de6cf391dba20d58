"""NodeRuntime: the lifecycle of sandboxes on this host.

create -> running <-> paused; running/paused -> stopped (processes gone, files kept);
stopped -> running (start again on the same disk); any -> deleted (nothing left).

Durable pieces live under DATA (records, disk images); runtime pieces (bundle,
mounts, supervisor socket, runc state) live under /run/cloche/<node key>, because runc
must be able to traverse to the rootfs as the sandbox's unprivileged root. On start the
runtime reconciles records with what is really on the host: it adopts containers that
still run, marks dead ones stopped (files kept) and removes everything half-made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from cloche.node import cgroups, disk, drivers, idmap, linux, orphans, supervisor
from cloche.node.api import ExpireCallback, PoolStatus, SandboxEvents, TemplateInfo
from cloche.node.bundle import UID_RANGE, HostBind, build_config
from cloche.node.config import NodeConfig, node_key
from cloche.node.errors import InvalidSpec, InvalidState, RuntimeFailure, SandboxNotFound
from cloche.node.net import links
from cloche.node.net.firewall import Counters
from cloche.node.net.node import NodeNetwork
from cloche.node.net.policy import NetworkPolicy
from cloche.node.paths import BIN_DIR_PATH
from cloche.node.pool import WarmPool
from cloche.node.protocol import ExecRequest
from cloche.node.reach import SandboxReach
from cloche.node.records import RecordStore, SandboxRecord
from cloche.node.runc import OciDriver
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.templates import TemplateStore
from cloche.node.uids import UidAllocator
from cloche.snapshots import gc, tree
from cloche.snapshots.blobstore import open_store
from cloche.snapshots.store import SnapshotCorrupt, SnapshotStore, WriteStats

log = logging.getLogger("cloche.node")

OVERLAY_FLAGS = 0x2 | 0x4  # MS_NOSUID | MS_NODEV
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm"}  # fmt: skip
# The trust store every sandbox gets when the node has networking: the host's bundle
# plus the node's egress-proxy CA (see `_install_trust`), at a path that always exists
# in the sandbox, and named by the variables that Python, requests, Node, curl and git read.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUNDLE_NAME, CA_NAME = "ca-certificates.crt", "cloche-ca.crt"
TRUST_ENV = {"SSL_CERT_FILE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}", "REQUESTS_CA_BUNDLE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}",
             "CURL_CA_BUNDLE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}", "GIT_SSL_CAINFO": f"{BIN_DIR_PATH}/{BUNDLE_NAME}",
             "NODE_EXTRA_CA_CERTS": f"{BIN_DIR_PATH}/{CA_NAME}"}  # fmt: skip


class SandboxListener(Protocol):
    """Told when a sandbox starts serving its user and when it stops. Services that
    reach into sandboxes (the in-sandbox state socket) hang off these events; the
    host directory is bound at /.cloche/host inside the sandbox."""

    async def sandbox_started(self, record: SandboxRecord, host_dir: Path) -> None: ...

    async def sandbox_stopped(self, sandbox_id: str) -> None: ...


def new_id() -> str:
    return "sb_" + secrets.token_hex(8)


class NodeRuntime(SandboxReach):
    """Sandboxes on one host. All public methods are coroutines or cheap reads."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key = node_key(config.data_dir)
        self.data = config.data_dir / "node"
        self.run = config.run_root / self.key
        self.run.mkdir(parents=True, exist_ok=True)
        os.chmod(config.run_root, 0o711)
        os.chmod(self.run, 0o711)
        _write_owner(self.run / "owner", config.data_dir)
        if not config.init_binary.exists():
            raise RuntimeFailure(f"supervisor binary {config.init_binary} is missing (run `make`)")
        # runc binds the supervisor from a path the sandbox's root can traverse.
        # Everything in the package's _bin/ (cloche-init and in-sandbox tools) is bound
        # read-only at /.cloche/bin in every sandbox, from a path the sandbox's root can
        # traverse. Files are replaced by rename: running sandboxes may be executing them.
        self.bin_dir = self.run / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        os.chmod(self.bin_dir, 0o755)
        for src in config.init_binary.parent.iterdir():
            staging = self.bin_dir / f".{src.name}.{os.getpid()}"
            shutil.copy2(src, staging)
            os.chmod(staging, 0o755)
            os.rename(staging, self.bin_dir / src.name)
        self.init_path = self.bin_dir / "cloche-init"
        self.records = RecordStore(self.data / "sandboxes")
        self.templates = TemplateStore(config.data_dir / "templates")
        self.drivers = drivers.available(self.run)
        if config.isolation not in self.drivers:
            raise drivers.missing(config.isolation)
        self.driver: OciDriver = self.drivers[config.isolation]
        self.uids = UidAllocator(config.run_root / "uids")
        self.cgroup_parent = cgroups.node_parent(self.key)
        self._swap = cgroups.swap_control()
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Future[None]] = set()
        self.pool = WarmPool(self, config.pool_template, config.pool_limits, config.pool_size, config.isolation,
                             self.driver.pids_fixed_at_boot)  # fmt: skip
        self.network = (NodeNetwork(self.key, config.network, config.run_root, self.data)
                        if config.network else None)  # fmt: skip
        self.base_env = {**BASE_ENV, **(TRUST_ENV if self.network else {})}
        if self.network:
            self._install_trust(self.network.ca.cert_pem)
        self._reaper: asyncio.Task[None] | None = None
        self._expired: list[ExpireCallback] = []
        self.listeners: list[SandboxListener] = []  # node-local services (they get the host directory)
        self._subscribers: list[SandboxEvents] = []
        self.snapshots = SnapshotStore(open_store(config.blob_url, config.data_dir / "blobs"))
        defaults = config.pool_limits
        self.disk_stock = disk.DiskStock(self.data / "disk-stock", defaults.disk_mb, defaults.inode_count)
        # Manifests referenced from outside the node (named snapshots); GC keeps them.
        self.pinned_manifests: Callable[[], set[str]] = set

    def _install_trust(self, ca_pem: bytes) -> None:
        """Write the sandboxes' trust store into the bound bin directory: the host's CA
        bundle with the node's egress-proxy CA appended (the proxy presents certificates
        from it for hosts with request rules), and that CA alone for NODE_EXTRA_CA_CERTS."""
        system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.exists() else b""
        for name, data in ((BUNDLE_NAME, system.rstrip(b"\n") + b"\n" + ca_pem), (CA_NAME, ca_pem)):
            staging = self.bin_dir / f".{name}.{os.getpid()}"
            staging.write_bytes(data)
            os.chmod(staging, 0o644)
            os.rename(staging, self.bin_dir / name)

    # ---- startup and shutdown -------------------------------------------------------

    async def start(self) -> None:
        # What nodes whose data directory is gone left on this host (never this node's own).
        for failure in await asyncio.to_thread(orphans.collect, self.config.run_root, skip={self.key}):
            log.warning("could not remove a leftover: %s", failure)
        if self.network:
            await self.network.start()
        await asyncio.to_thread(self._reconcile)
        self.disk_stock.refill_soon()
        for rec in self.list():
            if rec.state in ("running", "paused"):
                await self.announce_started(rec)
        self._reaper = asyncio.create_task(self._reap_expired())
        self.pool.start()

    async def shutdown(self, on_shutdown: str, forced: Callable[[], bool]) -> None:
        """Bring every running or paused sandbox to a safe state before the node stops:
        hibernated (its files kept; it wakes after the restart) or killed. Once `forced()`
        turns true, the ones not done yet are only stopped (processes killed, everything
        unmounted, the disk kept). The warm pool goes in close()."""
        live = [r for r in self.list() if r.state in ("running", "paused")]
        if not live:
            return
        verb = "hibernating" if on_shutdown == "hibernate" else "killing"
        total, done = len(live), 0
        log.info("%s %d sandboxes", verb, total)
        gate = asyncio.Semaphore(2)

        async def one(rec: SandboxRecord) -> None:
            nonlocal done
            async with gate:
                try:
                    if forced():
                        await self.stop(rec.id)
                    elif on_shutdown == "hibernate":
                        await self.hibernate(rec.id)
                    else:
                        await self.kill(rec.id)
                except Exception:
                    log.exception("%s %s failed; stopping it instead", verb, rec.id)
                    await self.stop(rec.id)
                done += 1
                log.info("%s %d sandboxes: %d/%d", verb, total, done, total)

        await asyncio.gather(*(one(r) for r in live))

    async def close(self) -> None:
        """Stop background work and the warm pool. User sandboxes keep running and are
        adopted by the next start with the same data directory."""
        if self._reaper:
            self._reaper.cancel()
        await self.pool.close()
        idle = not any(r.state in ("running", "paused") for r in self._sandboxes.values())
        if idle:
            await asyncio.to_thread(self._remove_run_dir)
        if self.network:
            # With sandboxes still running, their policies stay in force while the node is down.
            await self.network.close(remove_table=idle)

    def _remove_run_dir(self) -> None:
        """With no live sandbox left, the node's runtime directory goes too."""
        for driver in self.drivers.values():
            driver.delete_all()
        shutil.rmtree(self.run, ignore_errors=True)
        cgroups.remove_tree(f"/{cgroups.PARENT}")  # ours, and the shared parent once empty

    def _reconcile(self) -> None:
        self.templates.get("base")  # built once, before the first create needs it
        statuses = {cid: status for d in self.drivers.values() for cid, status in d.statuses().items()}
        running = set(statuses)
        known = set()
        for rec in self.records.load_all():
            known.add(rec.id)
            if rec.state == "creating" or rec.pooled:
                self._destroy(rec)
                continue
            self.uids.claim(rec.uid_index, self.key)
            status = statuses.get(rec.id)
            if rec.state in ("running", "paused") and status in ("running", "paused") and self._adopt_network(rec):
                rec.state = status
                log.info("adopted sandbox %s (%s)", rec.id, status)
            else:
                self._teardown(rec.id)
                rec.net = None
                if rec.state != "hibernated":
                    rec.state = "stopped"
            self.records.save(rec)
            self._sandboxes[rec.id] = rec
        for d in self.records.orphan_dirs():
            shutil.rmtree(d, ignore_errors=True)
        for tmp in self.records.root.glob("*/disk.img.tmp"):
            tmp.unlink()
        for cid in running - known:
            self._teardown(cid)
        for d in self.run.iterdir():
            if d.is_dir() and d.name.startswith("sb_") and d.name not in self._sandboxes:
                self._teardown(d.name)
        cgroups.remove_tree(self.cgroup_parent)
        if self.network:
            for ifname in self.network.reap_unknown({r.id for r in self._sandboxes.values() if r.net}):
                log.info("removed leftover link %s", ifname)

    def _adopt_network(self, rec: SandboxRecord) -> bool:
        """A surviving container keeps its link; without it, it is not adopted."""
        if self.network is None or rec.net is None:
            return self.network is None
        try:
            pid = int((self.run / rec.id / "pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and self.network.adopt(rec.id, rec.net, f"/proc/{pid}/ns/net", rec.spec.network):
            return True
        log.warning("sandbox %s lost its network link; restarting it", rec.id)
        return False

    async def announce_started(self, rec: SandboxRecord) -> None:
        for listener in self.listeners:
            await listener.sandbox_started(rec, self.host_dir(rec.id))
        for subscriber in self._subscribers:
            await subscriber.sandbox_started(rec)

    async def announce_stopped(self, sandbox_id: str) -> None:
        for listener in self.listeners:
            await listener.sandbox_stopped(sandbox_id)
        for subscriber in self._subscribers:
            await subscriber.sandbox_stopped(sandbox_id)

    def subscribe(self, listener: SandboxEvents) -> None:
        self._subscribers.append(listener)

    def on_expire(self, callback: ExpireCallback) -> None:
        self._expired.append(callback)

    # ---- queries ---------------------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord:
        rec = self._sandboxes.get(sandbox_id)
        if rec is None or rec.pooled:
            raise SandboxNotFound(f"sandbox {sandbox_id} not found")
        return rec

    def list(self) -> list[SandboxRecord]:
        return [r for r in self._sandboxes.values() if not r.pooled]

    def all_records(self) -> list[SandboxRecord]:
        return list(self._sandboxes.values())

    def capacity(self) -> dict[str, float]:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
        return {"cpu": float(os.cpu_count() or 1), "memory_mb": total_kb // 1024}

    @property
    def default_isolation(self) -> str:
        return self.config.isolation

    @property
    def networking(self) -> bool:
        return self.network is not None

    def pool_status(self) -> PoolStatus:
        pool = self.pool
        return PoolStatus(pool.template, pool.isolation, pool.size, len(pool.ready), pool.claims)

    def set_pool_size(self, size: int) -> None:
        self.pool.set_size(size)

    def network_stats(self, sandbox_id: str) -> dict[str, int] | None:
        net = self.network
        if net is None or net.link(sandbox_id) is None:
            return None
        counters = net.counters_of(sandbox_id).to_json()
        dns = net.dns_stats(sandbox_id)
        counters.update({"dns_queries": dns["queries"], "dns_refused": dns["refused"],
                         "dns_rate_limited": dns["rate_limited"]})  # fmt: skip
        return counters

    def template_names(self) -> list[str]:
        return self.templates.names()

    def template(self, name: str) -> TemplateInfo:
        return TemplateInfo(name, bool(self.templates.get(name).binds))

    async def import_template(self, name: str, tarball: AsyncIterable[bytes], on_base: bool = False) -> TemplateInfo:
        """The tarball is spooled to a temporary file as it arrives (memory stays bounded)."""
        with tempfile.TemporaryFile() as spool:
            async for chunk in tarball:
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            await asyncio.to_thread(self.templates.import_tar, name, spool, on_base)
        return self.template(name)

    def socket_path(self, sandbox_id: str) -> str:
        return self._socket_path(self.get(sandbox_id))

    def _socket_path(self, rec: SandboxRecord) -> str:
        return str(self._driver(rec).socket_path(self.run / rec.id))

    def _driver(self, rec: SandboxRecord) -> OciDriver:
        driver = self.drivers.get(rec.spec.isolation)
        if driver is None:
            raise InvalidSpec(str(drivers.missing(rec.spec.isolation)))
        return driver

    def _drivers_of(self, sandbox_id: str) -> list[OciDriver]:
        """The driver of a known sandbox; every driver for a container without a record."""
        rec = self._sandboxes.get(sandbox_id)
        driver = self.drivers.get(rec.spec.isolation) if rec else None
        return [driver] if driver else list(self.drivers.values())

    def _cgroup(self, sandbox_id: str) -> str:
        return f"{self.cgroup_parent}/{sandbox_id}"

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # ---- lifecycle -------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True,
                     snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        if snapshot is not None:
            return await self.create_cold(spec, snapshot=snapshot)
        spec.validate()
        if spec.isolation not in self.drivers:
            raise InvalidSpec(str(drivers.missing(spec.isolation)))
        await asyncio.to_thread(self.templates.get, spec.template)
        if self.network:
            await self.network.check_policy(spec.network)
        if use_pool:
            claimed = await self.pool.claim(spec)
            if claimed is not None:
                return claimed
        return await self.create_cold(spec)

    async def create_cold(self, spec: SandboxSpec, pooled: bool = False,
                          snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        """Create without the pool; with `snapshot`, the sandbox starts from that manifest's files."""
        sandbox_id = new_id()
        rec = SandboxRecord(id=sandbox_id, state="creating", spec=spec, snapshot=snapshot,
                            uid_index=self.uids.allocate(self.key), pooled=pooled)  # fmt: skip
        rec.expires_at = time.time() + spec.timeout_s if spec.timeout_s else None
        self._sandboxes[sandbox_id] = rec
        provisioning = asyncio.ensure_future(asyncio.to_thread(self._provision_and_run, rec, True))
        try:
            # Shielded: a cancelled caller (shutdown) must not clean up while the thread
            # is still mounting and starting; the cleanup below waits for it first.
            await asyncio.shield(provisioning)
        except BaseException:
            await asyncio.gather(provisioning, return_exceptions=True)
            self._sandboxes.pop(sandbox_id, None)
            await asyncio.shield(asyncio.to_thread(self._destroy, rec))
            raise
        rec.state = "running"
        await asyncio.to_thread(self.records.save, rec)
        if not pooled:
            await self.announce_started(rec)
        return rec

    def adopt_from_pool(self, rec: SandboxRecord, spec: SandboxSpec) -> SandboxRecord:
        """Turn a pooled sandbox into the caller's: its limits and env become `spec`'s."""
        try:
            if self.network:
                self.network.apply(rec.id, spec.network)
            if spec.limits != rec.spec.limits:
                self._set_limits(rec, spec.limits)
        except BaseException:
            self._sandboxes.pop(rec.id, None)  # a pooled sandbox that cannot be set up is not handed out
            self._destroy(rec)
            raise
        rec.spec = spec
        rec.pooled = False
        now = time.time()
        rec.created_at = rec.last_active_at = now
        rec.expires_at = now + spec.timeout_s if spec.timeout_s else None
        self.records.save(rec)
        return rec

    def _provision_and_run(self, rec: SandboxRecord, fresh: bool) -> None:
        if fresh:
            self.records.save(rec)
        template = self.templates.get(rec.spec.template)
        limits = rec.spec.limits
        ddir = self.records.dir(rec.id)
        rdir = self.run / rec.id
        for sub in ("disk", "lower", "rootfs", "host"):
            (rdir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(rdir, 0o711)
        os.chmod(rdir / "host", 0o755)
        # The sandbox's root owns its host directory, so an agent can create its socket there.
        os.chown(rdir / "host", UidAllocator.base(rec.uid_index), UidAllocator.base(rec.uid_index))
        image = ddir / "disk.img"
        base = UidAllocator.base(rec.uid_index)
        upper, work = rdir / "disk" / "upper", rdir / "disk" / "work"
        if not image.exists():
            self._make_disk(rec, image, rdir / "disk")
        disk.mount_image(str(image), str(rdir / "disk"))
        if not upper.exists():
            _make_upper(upper, work, base)
        idmap.bind_shifted(str(self.init_path), template.rootfs, str(rdir / "lower"), base, UID_RANGE)
        linux.mount("overlay", str(rdir / "rootfs"), "overlay", OVERLAY_FLAGS,
                    f"lowerdir={rdir / 'lower'},upperdir={upper},workdir={work}")  # fmt: skip
        binds = list(template.binds)
        driver = self._driver(rec)
        driver.prepare(rdir, base)
        netns = rdir / "netns" if driver.network_before_start else None
        if netns is not None:
            links.make_netns(netns)
        if self.network:
            rec.net = self.network.prepare(rec.id, rdir).to_json()
            binds.append(HostBind(str(rdir / "resolv.conf"), "/etc/resolv.conf"))
            # for tools that read only the system store (curl's default, openssl, Go)
            if (Path(template.rootfs) / str(SYSTEM_BUNDLE).lstrip("/")).is_file():
                binds.append(HostBind(str(self.bin_dir / BUNDLE_NAME), str(SYSTEM_BUNDLE)))
        config = build_config(
            sandbox_id=rec.id,
            uid_base=base,
            limits=limits,
            bin_dir=str(self.bin_dir),
            host_dir=str(rdir / "host"),
            binds=binds,
            cgroup_path=self._cgroup(rec.id),
            swap_control=self._swap,
            isolation=rec.spec.isolation,
            bundle=rdir,
            netns=netns,
        )
        (rdir / "config.json").write_text(json.dumps(config))
        policy = None if rec.pooled else rec.spec.network
        if self.network and netns is not None:
            self.network.attach(rec.id, str(netns), policy)
        pid = driver.run(rec.id, rdir, rdir / "runc.log")
        if self.network and netns is None:
            self.network.attach(rec.id, f"/proc/{pid}/ns/net", policy)

    def _make_disk(self, rec: SandboxRecord, image: Path, mountpoint: Path) -> None:
        """A fresh disk image, filled from the record's snapshot when it has one. It only
        becomes disk.img once complete, so a crash leaves the previous state intact."""
        limits = rec.spec.limits
        tmp = image.with_name("disk.img.tmp")
        if not self.disk_stock.take(limits.disk_mb, limits.inode_count, tmp):
            disk.create_image(str(tmp), limits.disk_mb, limits.inode_count)
        if rec.snapshot:
            base = UidAllocator.base(rec.uid_index)
            disk.mount_image(str(tmp), str(mountpoint))
            try:
                _make_upper(mountpoint / "upper", mountpoint / "work", base)
                manifest = self.snapshots.get_manifest(rec.snapshot)
                tree.restore(manifest, mountpoint / "upper", base, self.snapshots)
            except BaseException:
                disk.unmount(str(mountpoint))
                tmp.unlink()
                raise
            disk.unmount(str(mountpoint))
        os.rename(tmp, image)

    def _teardown(self, sandbox_id: str) -> None:
        """Remove the runtime half of a sandbox (container, network, mounts, bundle); keep its disk."""
        for driver in self._drivers_of(sandbox_id):
            driver.delete(sandbox_id)
        if self.network:
            self.network.detach(sandbox_id)
        rec = self._sandboxes.get(sandbox_id)
        if rec is not None:
            rec.net = None
        rdir = self.run / sandbox_id
        # Unmount by trying (not-mounted answers EINVAL): scanning the host's mount table
        # costs tens of ms once a node runs a thousand sandboxes.
        for sub in ("rootfs", "lower", "disk", "netns"):
            disk.unmount(str(rdir / sub))
        shutil.rmtree(rdir, ignore_errors=True)
        cgroups.remove_tree(self._cgroup(sandbox_id))

    def _destroy(self, rec: SandboxRecord) -> None:
        self._teardown(rec.id)
        shutil.rmtree(self.records.dir(rec.id), ignore_errors=True)
        self.uids.release(rec.uid_index)

    async def kill(self, sandbox_id: str) -> None:
        """Destroy the sandbox and everything it had; nothing is left on the host."""
        async with self._lock(sandbox_id):
            rec = self._sandboxes.get(sandbox_id)
            if rec is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            if not rec.pooled:
                await self.announce_stopped(sandbox_id)
            await asyncio.to_thread(self._destroy, rec)
            self._sandboxes.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        """Kill the sandbox's processes and release its resources; keep its files."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state != "stopped":
                await self.announce_stopped(sandbox_id)
                await asyncio.to_thread(self._teardown, sandbox_id)
                rec.state = "stopped"
                await asyncio.to_thread(self.records.save, rec)
            return rec

    async def start_sandbox(self, sandbox_id: str) -> SandboxRecord:
        """Start a stopped or hibernated sandbox again (same id, limits, env and files):
        on its own disk when the node still holds it, else from its snapshot."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state in ("stopped", "hibernated"):
                try:
                    await asyncio.to_thread(self._provision_and_run, rec, False)
                except BaseException:
                    await asyncio.to_thread(self._teardown, sandbox_id)
                    raise
                rec.state = "running"
                rec.last_active_at = time.time()
                await asyncio.to_thread(self.records.save, rec)
                await self.announce_started(rec)
                if rec.spec.on_resume:
                    sock, req = self.prepare_exec(rec.id, ExecRequest(cmd=["/bin/sh", "-c", rec.spec.on_resume],
                                                                      detach=True))  # fmt: skip
                    session = await supervisor.open_session(sock, req)
                    await session.close()
            return rec

    async def wake(self, sandbox_id: str) -> SandboxRecord:
        """Whatever state the sandbox sleeps in, make it running (waking is transparent)."""
        rec = self.get(sandbox_id)
        if rec.state == "paused":
            return await self.resume(sandbox_id)
        if rec.state in ("stopped", "hibernated"):
            return await self.start_sandbox(sandbox_id)
        return rec

    def touch(self, sandbox_id: str) -> None:
        """Record user activity (it postpones the idle policy)."""
        self.get(sandbox_id).last_active_at = time.time()

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord:
        """Stop the processes, capture the writable layer as a snapshot and release CPU,
        memory and cgroup. With keep_local the disk stays on this node for a fast resume."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "creating":
                raise InvalidState(f"sandbox {sandbox_id} is still being created")
            if rec.state != "hibernated":
                await self.announce_stopped(sandbox_id)
                await asyncio.to_thread(self._hibernate, rec)
            if not keep_local:
                (self.records.dir(sandbox_id) / "disk.img").unlink(missing_ok=True)
            return rec

    def _capture(self, rec: SandboxRecord) -> tuple[str, WriteStats]:
        """Snapshot the sandbox's upper layer (its disk must be mounted and quiet)."""
        parent = None
        if rec.snapshot:
            try:
                parent = self.snapshots.get_manifest(rec.snapshot)
            except SnapshotCorrupt:
                parent = None
        stats = WriteStats()
        upper = self.run / rec.id / "disk" / "upper"
        manifest = tree.capture(upper, UidAllocator.base(rec.uid_index), self.snapshots, parent, stats)
        manifest["template"] = rec.spec.template
        return self.snapshots.put_manifest(manifest, stats), stats

    def _mount_for_capture(self, rec: SandboxRecord) -> bool:
        """Mount a stopped sandbox's disk; returns whether we mounted it."""
        target = self.run / rec.id / "disk"
        if os.path.ismount(target):
            return False
        target.mkdir(parents=True, exist_ok=True)
        disk.mount_image(str(self.records.dir(rec.id) / "disk.img"), str(target))
        return True

    def _hibernate(self, rec: SandboxRecord) -> None:
        self._driver(rec).delete(rec.id)
        self._mount_for_capture(rec)
        self.snapshots.begin_write()
        try:
            digest, stats = self._capture(rec)
            rec.snapshot = digest
            rec.last_hibernate = {"chunks_written": stats.chunks_written, "bytes_written": stats.bytes_written,
                                  "chunks_reused": stats.chunks_reused}  # fmt: skip
            rec.state = "hibernated"
            self.records.save(rec)
        finally:
            self.snapshots.end_write()
        self._teardown(rec.id)

    async def snapshot(self, sandbox_id: str) -> str:
        """A consistent snapshot of the sandbox's current files, leaving it as it was
        (a running sandbox is frozen while its layer is read)."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "hibernated" and rec.snapshot:
                return rec.snapshot
            return await asyncio.to_thread(self._snapshot_live, rec)

    def _snapshot_live(self, rec: SandboxRecord) -> str:
        frozen = rec.state == "running"
        if frozen:
            self._driver(rec).pause(rec.id)
        mounted = self._mount_for_capture(rec) if rec.state in ("stopped", "hibernated") else False
        self.snapshots.begin_write()
        try:
            digest, _ = self._capture(rec)
            return digest
        finally:
            self.snapshots.end_write()
            if mounted:
                disk.unmount(str(self.run / rec.id / "disk"))
            if frozen:
                self._driver(rec).resume(rec.id)

    def snapshot_bytes(self, manifest: str) -> int:
        return int(self.snapshots.get_manifest(manifest).get("bytes", 0))

    async def fork(self, sandbox_id: str, spec: SandboxSpec | None = None) -> SandboxRecord:
        """A new sandbox with the current files of this one (running or hibernated)."""
        source = self.get(sandbox_id)
        digest = await self.snapshot(sandbox_id)
        return await self.create_cold(spec or source.spec, snapshot=digest)

    def collect_garbage(self, grace_s: float = 300.0) -> gc.GcReport:
        def live() -> set[str]:
            return {r.snapshot for r in self._sandboxes.values() if r.snapshot} | self.pinned_manifests()

        return gc.collect(self.snapshots, live, grace_s)

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "paused":
                return rec
            if rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; only a running one pauses")
            await asyncio.to_thread(self._driver(rec).pause, sandbox_id)
            rec.state = "paused"
            await asyncio.to_thread(self.records.save, rec)
            return rec

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "paused":
                await asyncio.to_thread(self._driver(rec).resume, sandbox_id)
                rec.state = "running"
                rec.last_active_at = time.time()
                await asyncio.to_thread(self.records.save, rec)
            elif rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; it cannot be resumed")
            return rec

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord:
        """Replace the sandbox's network policy atomically. A running or paused sandbox
        gets it at once, and its open connections the new policy denies are cut; a
        sleeping one gets it when it wakes."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if self.network is None:
                raise InvalidState("networking is off on this node")
            await self.network.check_policy(policy)
            live = rec.state in ("running", "paused")
            if live:
                await asyncio.to_thread(self.network.apply, sandbox_id, policy)  # fails: nothing changed
            rec.spec = replace(rec.spec, network=policy)
            await asyncio.to_thread(self.records.save, rec)
            if live:
                # New connections already meet the new policy; cutting the open ones it
                # denies (a conntrack flush, ~10 ms) need not hold up the answer.
                cut = asyncio.ensure_future(asyncio.to_thread(self.network.cut, sandbox_id))
                self._background.add(cut)
                cut.add_done_callback(self._background.discard)
            return rec

    async def check_network(self, policy: NetworkPolicy) -> None:
        if self.network:
            await self.network.check_policy(policy)

    def network_counters(self) -> dict[str, Counters]:
        return self.network.counters() if self.network else {}

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        rec = self.get(sandbox_id)
        rec.spec = replace(rec.spec, timeout_s=timeout_s)
        rec.spec.validate()
        rec.expires_at = time.time() + timeout_s if timeout_s else None
        await asyncio.to_thread(self.records.save, rec)
        return rec

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        rec = self.get(sandbox_id)
        rec.spec = replace(rec.spec, env=env)
        await asyncio.to_thread(self.records.save, rec)
        return rec

    def _set_limits(self, rec: SandboxRecord, limits: Limits) -> None:
        """Write a running sandbox's limits to its cgroup, as its driver has them on the host."""
        cgroups.manager(self._cgroup(rec.id)).set_limits(self._driver(rec).host_limits(limits))

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord:
        """Change a sandbox's cpu, memory and pids limits in place: written to its cgroup
        when it runs (no restart, its processes untouched), else applied when it starts.
        The disk cannot change size. A memory limit below what the sandbox uses fails
        (the kernel refuses to reclaim it) and leaves the old limits."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            limits.validate()
            old = rec.spec.limits
            if (limits.disk_mb, limits.inodes) != (old.disk_mb, old.inodes):
                raise InvalidSpec("a sandbox's disk size cannot change")
            if rec.state in ("running", "paused") and limits != old:
                if self._driver(rec).pids_fixed_at_boot and limits.pids != old.pids:
                    raise InvalidState("a running gVisor sandbox's pids limit cannot change (it is its processes' "
                                       "RLIMIT_NPROC, set at boot): stop and start it to apply a new one")  # fmt: skip
                try:
                    await asyncio.to_thread(self._set_limits, rec, limits)
                except OSError as exc:
                    await asyncio.to_thread(self._set_limits, rec, old)
                    raise InvalidState(f"the new limits cannot be applied: {exc.strerror or exc}") from None
            rec.spec = replace(rec.spec, limits=limits)
            await asyncio.to_thread(self.records.save, rec)
            return rec

    async def _reap_expired(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for rec in list(self._sandboxes.values()):
                if rec.pooled or rec.state == "creating":
                    continue  # a create in flight is finished first; its timeout applies after
                try:
                    await self._apply_policy(rec, time.time())
                except SandboxNotFound:
                    continue
                except Exception:
                    log.exception("idle policy for %s failed", rec.id)

    async def _apply_policy(self, rec: SandboxRecord, now: float) -> None:
        idle = rec.spec.idle
        if rec.expires_at and rec.expires_at <= now:
            log.info("sandbox %s reached its timeout (%s)", rec.id, idle.on_timeout)
            if idle.on_timeout == "hibernate":
                rec.expires_at = None
                await self.hibernate(rec.id)
            else:
                await self.kill(rec.id)
                for callback in self._expired:
                    callback(rec.id)
            return
        quiet = now - rec.last_active_at
        if idle.hibernate_after_s and quiet >= idle.hibernate_after_s and rec.state in ("running", "paused"):
            await self.hibernate(rec.id)
        elif idle.pause_after_s and quiet >= idle.pause_after_s and rec.state == "running":
            await self.pause(rec.id)

    def delete_template(self, name: str) -> None:
        """Delete an imported template; refused while any sandbox is built on it (its
        files are the lower layer of those sandboxes)."""
        users = [r.id for r in self._sandboxes.values() if r.spec.template == name]
        if users:
            raise InvalidState(f"template {name!r} is used by {len(users)} sandbox(es), e.g. {users[0]}")
        if name == "base":
            raise InvalidState("the built-in template 'base' cannot be deleted")
        self.templates.delete(name)


def _make_upper(upper: Path, work: Path, uid_base: int) -> None:
    upper.mkdir()
    os.chown(upper, uid_base, uid_base)
    os.chmod(upper, 0o755)
    work.mkdir()


def _write_owner(path: Path, data_dir: Path) -> None:
    """Name the data directory that owns this runtime directory (atomically): `cloche
    node gc` removes what a node left once that directory is gone."""
    owner = str(data_dir.resolve())
    if path.exists() and path.read_text() == owner:
        return
    tmp = path.with_name(f".owner.{os.getpid()}")
    tmp.write_text(owner)
    os.rename(tmp, path)
