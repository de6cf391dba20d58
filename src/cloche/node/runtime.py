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
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from cloche.node import cgroups, disk, idmap, linux, supervisor
from cloche.node.bundle import UID_RANGE, build_config
from cloche.node.errors import InvalidState, RuntimeFailure, SandboxNotFound
from cloche.node.files import SandboxFS
from cloche.node.pool import WarmPool
from cloche.node.protocol import ExecRequest
from cloche.node.records import RecordStore, SandboxRecord
from cloche.node.runc import DRIVERS, OciDriver
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.templates import TemplateStore
from cloche.node.uids import UidAllocator

log = logging.getLogger("cloche.node")

OVERLAY_FLAGS = 0x2 | 0x4  # MS_NOSUID | MS_NODEV
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm"}  # fmt: skip


class SandboxListener(Protocol):
    """Told when a sandbox starts serving its user and when it stops. Services that
    reach into sandboxes (the in-sandbox state socket) hang off these events; the
    host directory is bound at /.cloche/host inside the sandbox."""

    async def sandbox_started(self, record: SandboxRecord, host_dir: Path) -> None: ...

    async def sandbox_stopped(self, sandbox_id: str) -> None: ...


@dataclass
class NodeConfig:
    data_dir: Path
    init_binary: Path
    driver: str = "runc"
    pool_size: int = 0
    pool_template: str = "base"
    pool_limits: Limits = Limits()
    run_root: Path = Path("/run/cloche")


def new_id() -> str:
    return "sb_" + secrets.token_hex(8)


def node_key(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]


class NodeRuntime:
    """Sandboxes on one host. All public methods are coroutines or cheap reads."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key = node_key(config.data_dir)
        self.data = config.data_dir / "node"
        self.run = config.run_root / self.key
        self.run.mkdir(parents=True, exist_ok=True)
        os.chmod(config.run_root, 0o711)
        os.chmod(self.run, 0o711)
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
        self.driver: OciDriver = DRIVERS[config.driver](self.run / "runc")
        self.uids = UidAllocator(config.run_root / "uids")
        self.cgroup_parent = cgroups.node_parent(self.key)
        self._swap = cgroups.swap_control()
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.pool = WarmPool(self, config.pool_template, config.pool_limits, config.pool_size)
        self._reaper: asyncio.Task[None] | None = None
        self.on_expire: Callable[[str], None] | None = None
        self.listeners: list[SandboxListener] = []

    # ---- startup and shutdown -------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._reconcile)
        for rec in self.list():
            if rec.state in ("running", "paused"):
                await self.announce_started(rec)
        self._reaper = asyncio.create_task(self._reap_expired())
        self.pool.start()

    async def close(self) -> None:
        """Stop background work and the warm pool. User sandboxes keep running and are
        adopted by the next start with the same data directory."""
        if self._reaper:
            self._reaper.cancel()
        await self.pool.close()
        if not any(r.state in ("running", "paused") for r in self._sandboxes.values()):
            await asyncio.to_thread(self._remove_run_dir)

    def _remove_run_dir(self) -> None:
        """With no live sandbox left, the node's runtime directory goes too."""
        self.driver.delete_all()
        shutil.rmtree(self.run, ignore_errors=True)
        cgroups.remove_tree(self.cgroup_parent)

    def _reconcile(self) -> None:
        running = set(self.driver.list_ids())
        known = set()
        for rec in self.records.load_all():
            known.add(rec.id)
            if rec.state == "creating" or rec.pooled:
                self._destroy(rec)
                continue
            self.uids.claim(rec.uid_index, self.key)
            state = self.driver.state(rec.id) if rec.id in running else None
            status = state.get("status") if state else None
            if rec.state in ("running", "paused") and status in ("running", "paused"):
                rec.state = status
                log.info("adopted sandbox %s (%s)", rec.id, status)
            else:
                self._teardown(rec.id)
                rec.state = "stopped"
            self.records.save(rec)
            self._sandboxes[rec.id] = rec
        for d in self.records.orphan_dirs():
            shutil.rmtree(d, ignore_errors=True)
        for cid in running - known:
            self._teardown(cid)
        for d in self.run.iterdir():
            if d.is_dir() and d.name.startswith("sb_") and d.name not in self._sandboxes:
                self._teardown(d.name)
        cgroups.remove_tree(self.cgroup_parent)

    def host_dir(self, sandbox_id: str) -> Path:
        return self.run / sandbox_id / "host"

    async def announce_started(self, rec: SandboxRecord) -> None:
        for listener in self.listeners:
            await listener.sandbox_started(rec, self.host_dir(rec.id))

    async def announce_stopped(self, sandbox_id: str) -> None:
        for listener in self.listeners:
            await listener.sandbox_stopped(sandbox_id)

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

    def usage(self, sandbox_id: str) -> cgroups.Usage:
        return cgroups.manager(self._cgroup(sandbox_id)).usage()

    def fs(self, sandbox_id: str) -> SandboxFS:
        rec = self.get(sandbox_id)
        if rec.state not in ("running", "paused"):
            raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; start it to use its files")
        return SandboxFS(str(self.run / sandbox_id / "rootfs"), UidAllocator.base(rec.uid_index))

    def socket_path(self, sandbox_id: str) -> str:
        return str(self.run / sandbox_id / "sock")

    def _cgroup(self, sandbox_id: str) -> str:
        return f"{self.cgroup_parent}/{sandbox_id}"

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # ---- lifecycle -------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True) -> SandboxRecord:
        spec.validate()
        await asyncio.to_thread(self.templates.get, spec.template)
        if use_pool:
            claimed = await self.pool.claim(spec)
            if claimed is not None:
                return claimed
        return await self.create_cold(spec)

    async def create_cold(self, spec: SandboxSpec, pooled: bool = False) -> SandboxRecord:
        sandbox_id = new_id()
        rec = SandboxRecord(id=sandbox_id, state="creating", spec=spec,
                            uid_index=self.uids.allocate(self.key), pooled=pooled)  # fmt: skip
        rec.expires_at = time.time() + spec.timeout_s if spec.timeout_s else None
        self._sandboxes[sandbox_id] = rec
        try:
            await asyncio.to_thread(self._provision_and_run, rec, True)
        except BaseException:
            self._sandboxes.pop(sandbox_id, None)
            await asyncio.to_thread(self._destroy, rec)
            raise
        rec.state = "running"
        await asyncio.to_thread(self.records.save, rec)
        if not pooled:
            await self.announce_started(rec)
        return rec

    def adopt_from_pool(self, rec: SandboxRecord, spec: SandboxSpec) -> SandboxRecord:
        """Turn a pooled sandbox into the caller's: its limits and env become `spec`'s."""
        if spec.limits != rec.spec.limits:
            cgroups.manager(self._cgroup(rec.id)).set_limits(spec.limits)
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
        image = ddir / "disk.img"
        if not image.exists():
            tmp = ddir / "disk.img.tmp"
            disk.create_image(str(tmp), limits.disk_mb, limits.inode_count)
            os.rename(tmp, image)
        base = UidAllocator.base(rec.uid_index)
        disk.mount_image(str(image), str(rdir / "disk"))
        upper, work = rdir / "disk" / "upper", rdir / "disk" / "work"
        if not upper.exists():
            upper.mkdir()
            os.chown(upper, base, base)
            os.chmod(upper, 0o755)
            work.mkdir()
        idmap.bind_shifted(str(self.init_path), template.rootfs, str(rdir / "lower"), base, UID_RANGE)
        linux.mount("overlay", str(rdir / "rootfs"), "overlay", OVERLAY_FLAGS,
                    f"lowerdir={rdir / 'lower'},upperdir={upper},workdir={work}")  # fmt: skip
        config = build_config(
            sandbox_id=rec.id,
            uid_base=base,
            limits=limits,
            bin_dir=str(self.bin_dir),
            host_dir=str(rdir / "host"),
            binds=list(template.binds),
            cgroup_path=self._cgroup(rec.id),
            swap_control=self._swap,
        )
        (rdir / "config.json").write_text(json.dumps(config))
        sock_path = rdir / "sock"
        if sock_path.exists():
            sock_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(sock_path))
            os.chmod(sock_path, 0o600)
            listener.listen(128)
            self.driver.run(rec.id, rdir, listener.fileno(), rdir / "runc.log")
        finally:
            listener.close()

    def _teardown(self, sandbox_id: str) -> None:
        """Remove the runtime half of a sandbox (container, mounts, bundle); keep its disk."""
        self.driver.delete(sandbox_id)
        rdir = self.run / sandbox_id
        for sub in ("rootfs", "lower"):
            target = rdir / sub
            if str(target) in linux.mountpoints():
                linux.umount(str(target), detach=False)
        disk.unmount(str(rdir / "disk"))
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
        """Start a stopped sandbox again on its own disk (same id, limits and files)."""
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "stopped":
                try:
                    await asyncio.to_thread(self._provision_and_run, rec, False)
                except BaseException:
                    await asyncio.to_thread(self._teardown, sandbox_id)
                    raise
                rec.state = "running"
                rec.last_active_at = time.time()
                await asyncio.to_thread(self.records.save, rec)
                await self.announce_started(rec)
            return rec

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "paused":
                return rec
            if rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; only a running one pauses")
            await asyncio.to_thread(self.driver.pause, sandbox_id)
            rec.state = "paused"
            await asyncio.to_thread(self.records.save, rec)
            return rec

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.get(sandbox_id)
            if rec.state == "paused":
                await asyncio.to_thread(self.driver.resume, sandbox_id)
                rec.state = "running"
                rec.last_active_at = time.time()
                await asyncio.to_thread(self.records.save, rec)
            elif rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; it cannot be resumed")
            return rec

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        rec = self.get(sandbox_id)
        rec.spec = replace(rec.spec, timeout_s=timeout_s)
        rec.spec.validate()
        rec.expires_at = time.time() + timeout_s if timeout_s else None
        await asyncio.to_thread(self.records.save, rec)
        return rec

    async def _reap_expired(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for rec in list(self._sandboxes.values()):
                if rec.expires_at and rec.expires_at <= now and not rec.pooled:
                    log.info("sandbox %s reached its timeout", rec.id)
                    try:
                        await self.kill(rec.id)
                    except SandboxNotFound:
                        continue
                    if self.on_expire:
                        self.on_expire(rec.id)

    # ---- exec --------------------------------------------------------------------------

    def prepare_exec(self, sandbox_id: str, request: ExecRequest) -> tuple[str, ExecRequest]:
        rec = self.get(sandbox_id)
        if rec.state != "running":
            raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; it must be running to exec")
        rec.last_active_at = time.time()
        request.env = {**BASE_ENV, **rec.spec.env, **request.env}
        return self.socket_path(sandbox_id), request

    async def exec(self, sandbox_id: str, request: ExecRequest) -> supervisor.ExecResult:
        sock, request = self.prepare_exec(sandbox_id, request)
        return await supervisor.run(sock, request)

    async def exec_session(self, sandbox_id: str, request: ExecRequest) -> supervisor.ExecSession:
        sock, request = self.prepare_exec(sandbox_id, request)
        return await supervisor.open_session(sock, request)

    async def signal(self, sandbox_id: str, pid: int, signo: int) -> int:
        sock, _ = self.prepare_exec(sandbox_id, ExecRequest(cmd=["-"]))
        return await supervisor.kill_process(sock, pid, signo)
