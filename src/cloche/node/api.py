"""The node as control sees it: one typed interface, plain data in and out.

Why it exists: control (and only control) drives sandboxes on a node through `Node`.
Today the in-process `NodeRuntime` implements it; cluster mode serves the same
interface over an authenticated node API with a remote client. So nothing here hands
out a live object that cannot cross a network: no host paths, no unix sockets, no file
descriptors. Records, specs and usage are dataclasses; files and exec are streams of
bytes and events; ingress is a byte stream to a sandbox port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cloche.node.archive import UploadReport
from cloche.node.cgroups import Usage as SandboxUsage
from cloche.node.file_meta import FileInfo
from cloche.node.files import Entry
from cloche.node.net.firewall import Counters
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecEvent, ExecResult
from cloche.node.watch import FsEvent
from cloche.snapshots.gc import GcReport

CHUNK = 1 << 20  # file streams move at most this much per chunk


@dataclass(frozen=True)
class DiskUsage:
    """`image_bytes`: blocks the sparse disk image really holds on the host (0 without
    one); used/total: inside the sandbox's filesystem while it is mounted (else 0)."""

    image_bytes: int
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class PoolStatus:
    template: str
    isolation: str
    size: int  # the target
    ready: int
    claims: int  # creates served from the pool since the node started


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    on_base: bool  # laid over the base template (the host's /usr)


class SandboxEvents(Protocol):
    """Told when a sandbox starts serving its user and when it stops."""

    async def sandbox_started(self, record: SandboxRecord) -> None: ...

    async def sandbox_stopped(self, sandbox_id: str) -> None: ...


@runtime_checkable
class SandboxFiles(Protocol):
    """Path-safe file access to one running sandbox. Paths are absolute inside the
    sandbox (see files.normalize); errors are node.errors.FileError."""

    def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """A regular file's bytes, in chunks of at most `chunk` (never whole in memory)."""
        ...

    async def read_all(self, path: str, limit: int) -> bytes:
        """A small file whole; FileError 413 when it is larger than `limit`."""
        ...

    async def size(self, path: str) -> int:
        """A regular file's size (FileError for anything else)."""
        ...

    async def write(self, path: str, chunks: AsyncIterable[bytes], mode: int = 0o644) -> int:
        """Atomically replace `path` with the chunks (written as they arrive); bytes written."""
        ...

    async def list(self, path: str) -> list[Entry]: ...

    async def stat(self, path: str) -> Entry: ...

    async def is_dir(self, path: str) -> bool: ...

    async def exists(self, path: str) -> bool: ...

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        """mkdir -p."""
        ...

    async def remove(self, path: str, recursive: bool = False) -> None: ...

    async def rename(self, src: str, dst: str) -> None: ...

    async def symlink(self, path: str, target: str) -> None: ...

    async def hardlink(self, path: str, existing: str) -> None: ...

    async def extract(self, path: str, tarball: AsyncIterable[bytes]) -> UploadReport:
        """Extract a tar (optionally gzip-compressed), streamed in, into the directory `path`."""
        ...

    def archive(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """`path` (a directory or a file) as a tar stream."""
        ...

    # ---- as a user of the sandbox, with owners and metadata -----------------------------

    async def write_as(self, path: str, chunks: AsyncIterable[bytes], uid: int, gid: int, mode: int = 0o644) -> int:
        """`write`, the new file owned by `uid`:`gid` (ids inside the sandbox)."""
        ...

    async def mkdir_as(self, path: str, uid: int, gid: int, mode: int = 0o755) -> None:
        """`mkdir`, the new directories owned by `uid`:`gid` (ids inside the sandbox)."""
        ...

    async def info(self, path: str) -> FileInfo:
        """`path` with its owner, mode, symlink target and metadata (a symlink is not followed)."""
        ...

    async def walk(self, path: str, depth: int) -> list[FileInfo]:
        """A directory's entries and theirs, `depth` levels down (symlinks are not entered)."""
        ...

    async def set_metadata(self, path: str, metadata: dict[str, str]) -> None:
        """Keep key/value metadata on a file or directory (keys lower-cased); `info` shows it."""
        ...

    async def watch(self, path: str, recursive: bool) -> AsyncIterator[FsEvent]:
        """Changes below a directory, once awaited (from then on). The stream ends with
        FileError `not_running` when the sandbox stops running."""
        ...


@runtime_checkable
class ExecStream(Protocol):
    """A running command: iterate `events()` (start, stdout, stderr, exit); send stdin,
    signals and window sizes. `pid` is known once the start event has come."""

    pid: int

    def events(self) -> AsyncIterator[ExecEvent]: ...

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def signal(self, signo: int) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Node(Protocol):
    """Everything control needs from a node. Reads of records are cheap and local to
    the implementation (a remote client keeps them current from the node's events);
    everything that does work is a coroutine. Errors are node.errors.RuntimeFailure."""

    @property
    def key(self) -> str:
        """The node's id."""
        ...

    @property
    def default_isolation(self) -> str: ...

    @property
    def networking(self) -> bool:
        """Whether sandboxes get a network link (else loopback only)."""
        ...

    # ---- records and lifecycle -------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord: ...

    async def current(self, sandbox_id: str) -> SandboxRecord:
        """The record as the node holds it now: for an answer that must not lag a change
        another server replica just made (a remote client's copy follows events)."""
        ...

    def list(self) -> list[SandboxRecord]:
        """Users' sandboxes (not the warm pool's)."""
        ...

    def all_records(self) -> list[SandboxRecord]:
        """Users' sandboxes and the warm pool's."""
        ...

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True,
                     snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        """A running sandbox; with `snapshot` it starts from that manifest's files."""
        ...

    async def adopt(self, lost: SandboxRecord, snapshot: str | None) -> SandboxRecord:
        """Take in a sandbox another node lost: same id and spec, files from `snapshot`."""
        ...

    async def kill(self, sandbox_id: str) -> None: ...

    async def stop(self, sandbox_id: str) -> SandboxRecord: ...

    async def start_sandbox(self, sandbox_id: str) -> SandboxRecord: ...

    async def wake(self, sandbox_id: str) -> SandboxRecord: ...

    def touch(self, sandbox_id: str) -> None: ...

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord: ...

    async def snapshot(self, sandbox_id: str) -> str:
        """The manifest digest of a consistent copy of the sandbox's files."""
        ...

    def snapshot_bytes(self, manifest: str) -> int: ...

    async def fork(self, sandbox_id: str, spec: SandboxSpec | None = None) -> SandboxRecord: ...

    async def pause(self, sandbox_id: str) -> SandboxRecord: ...

    async def resume(self, sandbox_id: str) -> SandboxRecord: ...

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord: ...

    async def check_network(self, policy: NetworkPolicy) -> None:
        """Raise InvalidSpec when this node cannot enforce the policy."""
        ...

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord: ...

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        """Replace the sandbox's environment (for commands started from now on)."""
        ...

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord: ...

    def on_expire(self, callback: ExpireCallback) -> None:
        """`callback(sandbox_id)` when a sandbox is killed at its timeout."""
        ...

    def subscribe(self, listener: SandboxEvents) -> None: ...

    # ---- capacity and usage ----------------------------------------------------------

    def capacity(self) -> dict[str, float]:
        """cpu (cores) and memory_mb of the host."""
        ...

    def usage(self, sandbox_id: str) -> SandboxUsage:
        """Blocking read of a live (or pooled) sandbox's cgroup."""
        ...

    def disk_usage(self, sandbox_id: str) -> DiskUsage: ...

    def pool_status(self) -> PoolStatus: ...

    def set_pool_size(self, size: int) -> None: ...

    def network_counters(self) -> dict[str, Counters]:
        """Traffic counters by sandbox id (empty with networking off)."""
        ...

    def network_stats(self, sandbox_id: str) -> dict[str, int] | None:
        """Traffic and DNS counters of a sandbox with a live link, else None."""
        ...

    # ---- templates and garbage -------------------------------------------------------

    def template_names(self) -> list[str]: ...

    def template(self, name: str) -> TemplateInfo: ...

    async def import_template(self, name: str, tarball: AsyncIterable[bytes], on_base: bool = False) -> TemplateInfo:
        """Import a rootfs tarball (optionally gzip/xz) streamed in chunks."""
        ...

    def delete_template(self, name: str) -> None: ...

    def collect_garbage(self, grace_s: float = 300.0) -> GcReport: ...

    # ---- files, exec, ingress --------------------------------------------------------

    def files(self, sandbox_id: str) -> SandboxFiles:
        """The files of a running or paused sandbox (InvalidState otherwise)."""
        ...

    async def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult: ...

    async def open_exec(self, sandbox_id: str, request: ExecRequest) -> ExecStream: ...

    async def signal(self, sandbox_id: str, pid: int, signo: int) -> int:
        """Signal a process group started earlier; the errno (0 on success)."""
        ...

    async def connect(self, sandbox_id: str, port: int,
                      limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        """A TCP stream to a port the sandbox listens on (InvalidState without a link);
        `limit` bounds the reader's line reads, as asyncio.open_connection's."""
        ...

    async def connect_host(self, sandbox_id: str, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to the unix socket `name` the sandbox serves in /.cloche/host."""
        ...

    def host_file_tail(self, sandbox_id: str, name: str, nbytes: int) -> bytes:
        """The last `nbytes` of /.cloche/host/`name` (b"" when it does not exist)."""
        ...

    def remove_host_file(self, sandbox_id: str, name: str) -> None: ...


class ExpireCallback(Protocol):
    def __call__(self, sandbox_id: str) -> None: ...
