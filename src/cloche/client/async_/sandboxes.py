"""The async face of sandboxes: ``client.sandboxes`` and the :class:`AsyncSandbox` handle.

It mirrors :mod:`cloche.client.sync.sandboxes` method for method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING

from .. import _api, _flows
from .._base import ProgressCallback, SandboxBase
from .._spec import SandboxSpec
from ..models import (
    ArchiveResult,
    CodeResult,
    ExecEvent,
    ExecResult,
    IdlePolicy,
    NetworkSpec,
    NetworkStatus,
    PortUrls,
    SandboxInfo,
    SnapshotInfo,
)
from ._sender import AsyncSender
from .files import AsyncFiles

if TYPE_CHECKING:
    from websockets.asyncio.client import connect as ws_connect


class AsyncSandboxes:
    """``client.sandboxes``: create, look up and list sandboxes."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def create(
        self,
        template: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        timeout_s: float | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        on_timeout: str | None = None,
        on_resume: str | None = None,
        snapshot: str | None = None,
        wait_s: float | None = None,
        region: str | None = None,
        network: NetworkSpec | None = None,
        isolation: str | None = None,
        regions: Sequence[str] | None = None,
    ) -> AsyncSandbox:
        """Create a sandbox and return its handle; see :meth:`cloche.Client.sandboxes`'s
        ``create`` for the parameters and errors."""
        call = _api.create_sandbox(SandboxSpec.of(locals()))
        return AsyncSandbox(self._client, await self._client._call(call))

    async def get(self, sandbox_id: str) -> AsyncSandbox:
        """Return a handle for an existing sandbox (raises :class:`NotFound`)."""
        return AsyncSandbox(self._client, await self._client._call(_api.get_sandbox(sandbox_id)))

    async def connect(self, sandbox_id: str) -> AsyncSandbox:
        """Return a handle for an existing sandbox, resuming it first if it is paused."""
        return AsyncSandbox(self._client, await self._client._run(_flows.connect(sandbox_id)))

    async def list(self, state: str | None = None, metadata: Mapping[str, str] | None = None) -> list[AsyncSandbox]:
        """List this tenant's sandboxes, optionally filtered by state and metadata."""
        infos = await self._client._call(_api.list_sandboxes(state, metadata))
        return [AsyncSandbox(self._client, info) for info in infos]


class AsyncSandbox(SandboxBase):
    """Async handle for one sandbox; ``async with`` kills it when the block exits.

    Attributes:
        files: File operations inside this sandbox.
    """

    def __init__(self, client: AsyncSender, info: SandboxInfo) -> None:
        super().__init__(info)
        self._client = client
        self.files = AsyncFiles(client, info.id)

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.kill(missing_ok=True)

    async def refresh(self) -> AsyncSandbox:
        """Re-read the sandbox from the server (updates :attr:`info`/:attr:`state`)."""
        self._info = await self._client._call(_api.get_sandbox(self.id))
        return self

    async def exec(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult:
        """Run a command to completion; see :meth:`cloche.client.sync.Sandbox.exec`."""
        return await self._client._call(_api.exec_(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    async def run_code(
        self, code: str, env: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> CodeResult:
        """Run Python in the sandbox's stateful kernel; see :meth:`cloche.Sandbox.run_code`."""
        return await self._client._call(_api.run_code(self.id, code, env=env, timeout_s=timeout_s))

    def exec_stream(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[ExecEvent]:
        """Run a command and iterate (``async for``) over its start, output and exit
        events.  The request is sent when iteration starts."""
        return self._client._events(_api.exec_stream(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    async def upload_tar(
        self, path: str, data: bytes | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> ArchiveResult:
        """Extract a tar (optionally gzipped) archive into the directory ``path``."""
        return await self._client._call(_api.upload_tar(self.id, path, data), on_progress)

    async def download_tar(self, path: str) -> bytes:
        """Return a tar archive of the directory (or file) at ``path``."""
        return await self._client._call(_api.download_tar(self.id, path))

    async def download_tar_to(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream a tar archive of ``path`` into ``dest``; return the bytes written."""
        return await self._client._download(_api.download_tar(self.id, path), dest, on_progress)

    async def pause(self) -> AsyncSandbox:
        """Freeze every process in the sandbox."""
        self._info = await self._client._call(_api.pause(self.id))
        return self

    async def resume(self) -> AsyncSandbox:
        """Thaw a paused sandbox (or start a stopped one)."""
        self._info = await self._client._call(_api.resume(self.id))
        return self

    async def resize(
        self,
        cpu: float | None = None,
        memory_mb: int | None = None,
        pids: int | None = None,
        allow_move: bool = False,
    ) -> AsyncSandbox:
        """Change the sandbox's cpu, memory and pids limits in place, without a restart;
        see :meth:`cloche.Sandbox.resize` for the parameters and errors."""
        call = _api.resize_sandbox(self.id, cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=allow_move)
        self._info = await self._client._call(call)
        return self

    async def set_timeout(self, timeout_s: float) -> AsyncSandbox:
        """Make the sandbox expire ``timeout_s`` seconds from now."""
        self._info = await self._client._call(_api.set_timeout(self.id, timeout_s))
        return self

    async def hibernate(self, keep_local: bool = True) -> AsyncSandbox:
        """Snapshot the files and release CPU, memory and processes; see
        :meth:`cloche.client.sync.Sandbox.hibernate`."""
        self._info = await self._client._call(_api.hibernate(self.id, keep_local))
        return self

    async def fork(self, name: str | None = None, metadata: Mapping[str, str] | None = None) -> AsyncSandbox:
        """Start a new sandbox with this one's current files (running or hibernated)."""
        return AsyncSandbox(self._client, await self._client._call(_api.fork(self.id, name, metadata)))

    async def snapshot(self, name: str) -> SnapshotInfo:
        """Save the sandbox's current files as the named snapshot ``name``."""
        return await self._client._call(_api.create_snapshot(self.id, name))

    async def network(self) -> NetworkStatus:
        """The sandbox's network: the policy in force, its address and its traffic and
        DNS counters (also kept in :attr:`info`)."""
        return self._noted(await self._client._call(_api.get_network(self.id)))

    async def set_network(self, policy: NetworkSpec) -> NetworkStatus:
        """Replace the sandbox's network policy atomically (live, cutting connections it
        denies); see :meth:`cloche.Sandbox.set_network` for the parameters and errors."""
        return self._noted(await self._client._call(_api.set_network(self.id, policy)))

    async def port_urls(self, port: int, *, expires_s: int = 3600) -> PortUrls:
        """Where ``port`` is reachable from outside: URLs, traffic token and signed URL;
        see :meth:`cloche.Sandbox.port_urls`."""
        return await self._client._call(_api.port_urls(self.id, port, expires_s))

    async def url(self, port: int, *, signed: bool = False, expires_s: int = 3600) -> str:
        """The host-form URL of ``port`` (with ``signed``, the signed URL that needs no
        token until it expires); see :meth:`cloche.Sandbox.url`."""
        return await self._client._run(_flows.url(self.id, port, signed, expires_s))

    async def kill(self, missing_ok: bool = False) -> None:
        """Destroy the sandbox and its files (``missing_ok``: ignore NotFound)."""
        await self._client._run(_flows.kill(self.id, missing_ok))

    def pty_url(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> str:
        """The WebSocket URL of an interactive terminal running ``cmd`` (a shell-quoted
        command line; the server's login shell if omitted)."""
        return _api.pty_url(self._client.url, self.id, cmd=cmd, rows=rows, cols=cols, cwd=cwd)

    def pty(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> ws_connect:
        """Open an interactive terminal: ``async with sbx.pty() as ws: ...``.

        The frame protocol is described in :meth:`cloche.client.sync.Sandbox.pty`.
        """
        from websockets.asyncio.client import connect

        return connect(**self._client._pty_args(self.id, cmd, rows, cols, cwd))
