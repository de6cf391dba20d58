"""Reaching into a sandbox on this host: its files, its commands, its ports, its host
directory and its cgroup, as node/api.py's `Node` hands them to control.

Why it is apart from runtime.py: the lifecycle (create, hibernate, wake...) and the
ways in are two jobs. Everything here turns a host-local thing (a rootfs path, the
supervisor's unix socket, a veth address, /.cloche/host) into plain data or a stream,
so the same calls can be served to a control plane on another machine.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from cloche.node import cgroups, supervisor
from cloche.node.api import DiskUsage, ExecStream, SandboxFiles
from cloche.node.errors import InvalidState, SandboxNotFound
from cloche.node.files import SandboxFS
from cloche.node.local_files import LocalFiles
from cloche.node.net.node import NodeNetwork
from cloche.node.protocol import ExecRequest
from cloche.node.records import RecordStore, SandboxRecord
from cloche.node.uids import UidAllocator
from cloche.node.unixsock import connect_nofollow


class _ReadToReset(asyncio.StreamReader):
    """A peer that closes with our bytes unread resets the connection, often right after
    its answer: the answer is still read (then EOF), as from a socket, where asyncio's
    reader would raise at once and lose it."""

    def set_exception(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionResetError):
            self.feed_eof()
        else:
            super().set_exception(exc)


class SandboxReach:
    """The ways into a sandbox; NodeRuntime provides the attributes declared here."""

    run: Path
    records: RecordStore
    network: NodeNetwork | None
    base_env: dict[str, str]

    def get(self, sandbox_id: str) -> SandboxRecord:
        raise NotImplementedError

    def _socket_path(self, rec: SandboxRecord) -> str:
        raise NotImplementedError

    def _cgroup(self, sandbox_id: str) -> str:
        raise NotImplementedError

    def host_dir(self, sandbox_id: str) -> Path:
        """/.cloche/host inside the sandbox (node-local services bind their sockets here)."""
        return self.run / sandbox_id / "host"

    # ---- files ------------------------------------------------------------------------

    def fs(self, sandbox_id: str) -> SandboxFS:
        """The blocking, path-safe file access that `files` runs in threads."""
        rec = self.get(sandbox_id)
        if rec.state not in ("running", "paused"):
            raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; start it to use its files")
        rec.last_active_at = time.time()
        return SandboxFS(str(self.run / sandbox_id / "rootfs"), UidAllocator.base(rec.uid_index))

    def files(self, sandbox_id: str) -> SandboxFiles:
        return LocalFiles(self.fs(sandbox_id), lambda: self._running(sandbox_id))

    def _running(self, sandbox_id: str) -> bool:
        try:
            return self.get(sandbox_id).state == "running"
        except SandboxNotFound:
            return False

    # ---- exec -------------------------------------------------------------------------

    def prepare_exec(self, sandbox_id: str, request: ExecRequest) -> tuple[str, ExecRequest]:
        rec = self.get(sandbox_id)
        if rec.state != "running":
            raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; it must be running to exec")
        rec.last_active_at = time.time()
        request.env = {**self.base_env, **rec.spec.env, **request.env}
        return self._socket_path(rec), request

    async def exec(self, sandbox_id: str, request: ExecRequest) -> supervisor.ExecResult:
        sock, request = self.prepare_exec(sandbox_id, request)
        return await supervisor.run(sock, request)

    async def open_exec(self, sandbox_id: str, request: ExecRequest) -> ExecStream:
        sock, request = self.prepare_exec(sandbox_id, request)
        return await supervisor.open_session(sock, request)

    async def signal(self, sandbox_id: str, pid: int, signo: int) -> int:
        sock, _ = self.prepare_exec(sandbox_id, ExecRequest(cmd=["-"]))
        return await supervisor.kill_process(sock, pid, signo)

    # ---- ports and the host directory -------------------------------------------------

    def address(self, sandbox_id: str) -> str:
        """The sandbox's own address on this host (InvalidState without a link)."""
        link = self.network.link(sandbox_id) if self.network else None
        if link is None:
            state = self.get(sandbox_id).state
            raise InvalidState(f"sandbox {sandbox_id} is {state} and has no network link")
        return link.address

    async def connect(self, sandbox_id: str, port: int,
                      limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        return await asyncio.open_connection(self.address(sandbox_id), port, limit=limit)

    async def connect_host(self, sandbox_id: str, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # never by path: the sandbox's root owns the directory, a planted link must not lead elsewhere
        sock = connect_nofollow(str(self.host_dir(self.get(sandbox_id).id) / name))
        loop = asyncio.get_running_loop()
        reader = _ReadToReset()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.create_unix_connection(lambda: protocol, sock=sock)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def host_file_tail(self, sandbox_id: str, name: str, nbytes: int) -> bytes:
        # The sandbox's root owns the directory (as for connect_host): a planted symlink is
        # not followed to a host file, and only a regular file is read (a FIFO never blocks).
        try:
            fd = os.open(self.host_dir(sandbox_id) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return b""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return b""
            return os.pread(fd, nbytes, max(0, st.st_size - nbytes))
        except OSError:
            return b""
        finally:
            os.close(fd)

    def remove_host_file(self, sandbox_id: str, name: str) -> None:
        (self.host_dir(sandbox_id) / name).unlink(missing_ok=True)

    # ---- usage ------------------------------------------------------------------------

    def usage(self, sandbox_id: str) -> cgroups.Usage:
        return cgroups.manager(self._cgroup(sandbox_id)).usage()

    def disk_usage(self, sandbox_id: str) -> DiskUsage:
        try:
            image = os.stat(self.records.dir(sandbox_id) / "disk.img").st_blocks * 512
        except OSError:
            image = 0
        used = total = 0
        mounted = self.run / sandbox_id / "disk"
        try:
            if os.path.ismount(mounted):
                vfs = os.statvfs(mounted)
                total, used = vfs.f_blocks * vfs.f_frsize, (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        except OSError:
            pass  # unmounted meanwhile
        return DiskUsage(image, used, total)
