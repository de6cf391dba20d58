"""NodeRuntime: the lifecycle of sandboxes on this host, and the one implementation
of node/api.py's `Node`.

create -> running <-> paused; running/paused -> stopped (processes gone, files kept);
stopped -> running (start again on the same disk); any -> deleted (nothing left).

Durable pieces live under DATA (records, disk images); runtime pieces (bundle,
mounts, supervisor socket, runc state) live under /run/cloche/<node key> (run_dir.py).
This module decides *when*; collaborators do the work: provision.py builds and
removes sandboxes, reconcile.py matches records with the host at start, power.py
stops, starts, pauses and resumes them, snapshotting.py hibernates and snapshots,
live_changes.py changes settings in place, idle.py applies the idle policy, drain.py
brings sandboxes to rest at shutdown, announce.py tells listeners, and reach.py (the
base class) is the way into a sandbox: files, exec, ports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterable, Callable

from cloche.node import cgroups, disk, drivers, orphans, run_dir
from cloche.node.announce import Announcer, SandboxListener
from cloche.node.api import ExpireCallback, PoolStatus, SandboxEvents, TemplateInfo
from cloche.node.config import NodeConfig, node_key
from cloche.node.drain import drain
from cloche.node.errors import InvalidSpec, InvalidState, RuntimeFailure, SandboxNotFound
from cloche.node.idle import IdleReaper
from cloche.node.live_changes import LiveChanges
from cloche.node.net.firewall import Counters
from cloche.node.net.node import NodeNetwork
from cloche.node.net.policy import NetworkPolicy
from cloche.node.pool import WarmPool
from cloche.node.power import PowerStates
from cloche.node.provision import SandboxBuilder
from cloche.node.reach import SandboxReach
from cloche.node.reconcile import reconcile
from cloche.node.records import RecordStore, SandboxRecord
from cloche.node.runc import OciDriver
from cloche.node.sandbox_table import SandboxTable
from cloche.node.snapshotting import Snapshotter
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.templates import TemplateStore
from cloche.node.uids import UidAllocator
from cloche.snapshots import gc
from cloche.snapshots.blobstore import open_store
from cloche.snapshots.store import SnapshotStore

log = logging.getLogger("cloche.node")


def new_id() -> str:
    return "sb_" + secrets.token_hex(8)


class NodeRuntime(SandboxReach):
    """Sandboxes on one host. All public methods are coroutines or cheap reads."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key = node_key(config.data_dir)
        self.data = config.data_dir / "node"
        self.run = run_dir.make(config.run_root, self.key, config.data_dir)
        if not config.init_binary.exists():
            raise RuntimeFailure(f"supervisor binary {config.init_binary} is missing (run `make`)")
        self.bin_dir = self.run / "bin"
        run_dir.stage_binaries(config.init_binary.parent, self.bin_dir)
        self.init_path = self.bin_dir / "cloche-init"
        self.records = RecordStore(self.data / "sandboxes")
        self.templates = TemplateStore(config.data_dir / "templates")
        self.drivers = drivers.available(self.run)
        if config.isolation not in self.drivers:
            raise drivers.missing(config.isolation)
        self.driver: OciDriver = self.drivers[config.isolation]
        self.uids = UidAllocator(config.run_root / "uids")
        self.cgroup_parent = cgroups.node_parent(self.key)
        self.table = SandboxTable()
        self.pool = WarmPool(self, config.pool_template, config.pool_limits, config.pool_size, config.isolation,
                             self.driver.pids_fixed_at_boot)  # fmt: skip
        self.network = (NodeNetwork(self.key, config.network, config.run_root, self.data)
                        if config.network else None)  # fmt: skip
        self.base_env = {**run_dir.BASE_ENV, **(run_dir.TRUST_ENV if self.network else {})}
        if self.network:
            run_dir.install_trust(self.bin_dir, self.network.ca.cert_pem)
        self.announcer = Announcer(self.host_dir)
        self.listeners: list[SandboxListener] = self.announcer.listeners  # node-local services
        self.snapshots = SnapshotStore(open_store(config.blob_url, config.data_dir / "blobs"))
        defaults = config.pool_limits
        self.disk_stock = disk.DiskStock(self.data / "disk-stock", defaults.disk_mb, defaults.inode_count)
        # Manifests referenced from outside the node (named snapshots); GC keeps them.
        self.pinned_manifests: Callable[[], set[str]] = set
        self.builder = SandboxBuilder(run=self.run, bin_dir=self.bin_dir, init_path=self.init_path, table=self.table,
                                      records=self.records, templates=self.templates, drivers=self.drivers,
                                      network=self.network, uids=self.uids, snapshots=self.snapshots,
                                      disk_stock=self.disk_stock, cgroup_parent=self.cgroup_parent)  # fmt: skip
        self.snapshotter = Snapshotter(self.builder, self.snapshots, self.announcer.stopped)
        self.changes = LiveChanges(self.builder)
        self.power = PowerStates(self.builder, self.announcer, self.prepare_exec)
        self.reaper = IdleReaper(self.table, self)

    # ---- startup and shutdown -------------------------------------------------------

    async def start(self) -> None:
        # What nodes whose data directory is gone left on this host (never this node's own).
        for failure in await asyncio.to_thread(orphans.collect, self.config.run_root, skip={self.key}):
            log.warning("could not remove a leftover: %s", failure)
        if self.network:
            await self.network.start()
        await asyncio.to_thread(reconcile, self.builder, self.key)
        self.disk_stock.refill_soon()
        for rec in self.list():
            if rec.state in ("running", "paused"):
                await self.announce_started(rec)
        self.reaper.start()
        self.pool.start()

    async def shutdown(self, on_shutdown: str, forced: Callable[[], bool]) -> None:
        """Bring every running or paused sandbox to a safe state before the node stops:
        hibernated (its files kept; it wakes after the restart) or killed; only stopped once
        `forced()` turns true (drain.py). The warm pool goes in close()."""
        await drain(self, on_shutdown, forced)

    async def close(self) -> None:
        """Stop background work and the warm pool. User sandboxes keep running and are
        adopted by the next start with the same data directory."""
        self.reaper.stop()
        await self.pool.close()
        idle = not any(r.state in ("running", "paused") for r in self.table.records.values())
        if idle:
            await asyncio.to_thread(run_dir.remove, self.run, self.drivers)
        if self.network:
            # With sandboxes still running, their policies stay in force while the node is down.
            await self.network.close(remove_table=idle)

    async def announce_started(self, rec: SandboxRecord) -> None:
        await self.announcer.started(rec)

    def subscribe(self, listener: SandboxEvents) -> None:
        self.announcer.subscribers.append(listener)

    def on_expire(self, callback: ExpireCallback) -> None:
        self.reaper.expired.append(callback)

    # ---- queries ---------------------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord:
        return self.table.get(sandbox_id)

    async def current(self, sandbox_id: str) -> SandboxRecord:
        return self.get(sandbox_id)

    def list(self) -> list[SandboxRecord]:
        return self.table.users()

    def all_records(self) -> list[SandboxRecord]:
        return list(self.table.records.values())

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
        return str(self.builder.driver(rec).socket_path(self.run / rec.id))

    def _cgroup(self, sandbox_id: str) -> str:
        return self.builder.cgroup(sandbox_id)

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
        self.table.records[sandbox_id] = rec
        provisioning = asyncio.ensure_future(asyncio.to_thread(self.builder.provision_and_run, rec, True))
        try:
            # Shielded: a cancelled caller (shutdown) must not clean up while the thread
            # is still mounting and starting; the cleanup below waits for it first.
            await asyncio.shield(provisioning)
        except BaseException:
            await asyncio.gather(provisioning, return_exceptions=True)
            self.table.records.pop(sandbox_id, None)
            await asyncio.shield(asyncio.to_thread(self.builder.destroy, rec))
            raise
        rec.state = "running"
        await asyncio.to_thread(self.records.save, rec)
        if not pooled:
            await self.announcer.started(rec)
        return rec

    async def adopt(self, lost: SandboxRecord, snapshot: str | None) -> SandboxRecord:
        """Take in a sandbox another node lost (cluster failover, drain): the same id, spec
        and times, its files from `snapshot` (its last checkpoint; None: none was taken, it starts
        afresh from its template); it starts running here."""
        if lost.id in self.table.records:
            raise InvalidState(f"sandbox {lost.id} is already on this node")
        if lost.spec.isolation not in self.drivers:
            raise InvalidSpec(str(drivers.missing(lost.spec.isolation)))
        rec = SandboxRecord(id=lost.id, state="hibernated", spec=lost.spec, snapshot=snapshot,
                            uid_index=self.uids.allocate(self.key), created_at=lost.created_at,
                            expires_at=lost.expires_at)  # fmt: skip
        self.table.records[rec.id] = rec
        await asyncio.to_thread(self.records.save, rec)
        try:
            return await self.start_sandbox(rec.id)
        except BaseException:
            self.table.records.pop(rec.id, None)
            await asyncio.shield(asyncio.to_thread(self.builder.destroy, rec))
            raise

    def adopt_from_pool(self, rec: SandboxRecord, spec: SandboxSpec) -> SandboxRecord:
        """Turn a pooled sandbox into the caller's: its limits and env become `spec`'s."""
        try:
            if self.network:
                self.network.apply(rec.id, spec.network)
            if spec.limits != rec.spec.limits:
                self.builder.set_limits(rec, spec.limits)
        except BaseException:
            self.table.records.pop(rec.id, None)  # a pooled sandbox that cannot be set up is not handed out
            self.builder.destroy(rec)
            raise
        rec.spec = spec
        rec.pooled = False
        now = time.time()
        rec.created_at = rec.last_active_at = now
        rec.expires_at = now + spec.timeout_s if spec.timeout_s else None
        self.records.save(rec)
        return rec

    async def kill(self, sandbox_id: str) -> None:
        """Destroy the sandbox and everything it had; nothing is left on the host."""
        async with self.table.lock(sandbox_id):
            rec = self.table.records.get(sandbox_id)
            if rec is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            if not rec.pooled:
                await self.announcer.stopped(sandbox_id)
            await asyncio.to_thread(self.builder.destroy, rec)
            self.table.records.pop(sandbox_id, None)
        self.table.forget_lock(sandbox_id)

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        return await self.power.stop(sandbox_id)

    async def start_sandbox(self, sandbox_id: str) -> SandboxRecord:
        return await self.power.start(sandbox_id)

    async def wake(self, sandbox_id: str) -> SandboxRecord:
        return await self.power.wake(sandbox_id)

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        return await self.power.pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        return await self.power.resume(sandbox_id)

    def touch(self, sandbox_id: str) -> None:
        """Record user activity (it postpones the idle policy)."""
        self.get(sandbox_id).last_active_at = time.time()

    # ---- snapshots (snapshotting.py) -------------------------------------------------

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord:
        return await self.snapshotter.hibernate(sandbox_id, keep_local)

    async def snapshot(self, sandbox_id: str) -> str:
        return await self.snapshotter.snapshot(sandbox_id)

    def snapshot_bytes(self, manifest: str) -> int:
        return int(self.snapshots.get_manifest(manifest).get("bytes", 0))

    async def fork(self, sandbox_id: str, spec: SandboxSpec | None = None) -> SandboxRecord:
        """A new sandbox with the current files of this one (running or hibernated)."""
        source = self.get(sandbox_id)
        digest = await self.snapshot(sandbox_id)
        return await self.create_cold(spec or source.spec, snapshot=digest)

    def collect_garbage(self, grace_s: float = 300.0) -> gc.GcReport:
        def live() -> set[str]:
            return {r.snapshot for r in self.table.records.values() if r.snapshot} | self.pinned_manifests()

        return gc.collect(self.snapshots, live, grace_s)

    # ---- changes in place (live_changes.py) -------------------------------------------

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord:
        return await self.changes.set_network(sandbox_id, policy)

    async def check_network(self, policy: NetworkPolicy) -> None:
        if self.network:
            await self.network.check_policy(policy)

    def network_counters(self) -> dict[str, Counters]:
        return self.network.counters() if self.network else {}

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        return await self.changes.set_timeout(sandbox_id, timeout_s)

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        return await self.changes.set_env(sandbox_id, env)

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord:
        return await self.changes.resize(sandbox_id, limits)

    def delete_template(self, name: str) -> None:
        """Delete an imported template; refused while any sandbox is built on it (its
        files are the lower layer of those sandboxes)."""
        users = [r.id for r in self.table.records.values() if r.spec.template == name]
        if users:
            raise InvalidState(f"template {name!r} is used by {len(users)} sandbox(es), e.g. {users[0]}")
        if name == "base":
            raise InvalidState("the built-in template 'base' cannot be deleted")
        self.templates.delete(name)
