"""The asyncio client: :class:`AsyncClient` and the :class:`AsyncSandbox` handle.

It mirrors :mod:`cloche.client.sync` method for method; every network call is a
coroutine and ``exec_stream`` is an async iterator.  Example::

    from cloche import AsyncClient

    async with AsyncClient() as client:
        async with await client.sandboxes.create() as sbx:
            result = await sbx.exec("echo hi")
            async for event in sbx.exec_stream(["python3", "-c", "print(1)"]):
                print(event)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx

from . import _api
from ._base import (
    CHUNK_SIZE,
    DEFAULT_TIMEOUT,
    BaseClient,
    ProgressCallback,
    SandboxBase,
    read_chunk,
)
from ._sse import SSEDecoder, to_exec_event
from .errors import NotFound
from .models import (
    ApiKey,
    ArchiveResult,
    Entry,
    ExecEvent,
    ExecResult,
    Health,
    NewTenant,
    NodeInfo,
    SandboxInfo,
    Tenant,
    WriteResult,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import connect as ws_connect

__all__ = [
    "AsyncClient",
    "AsyncFiles",
    "AsyncNodes",
    "AsyncSandbox",
    "AsyncSandboxes",
    "AsyncTenants",
]

T = TypeVar("T")


async def _aiter_body(body: bytes | IO[bytes], on_progress: ProgressCallback | None) -> AsyncIterator[bytes]:
    """Yield ``body`` in chunks (file reads run in a worker thread), reporting progress."""
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        for i in range(0, len(view), CHUNK_SIZE):
            chunk = bytes(view[i : i + CHUNK_SIZE])
            yield chunk
            if on_progress:
                on_progress(len(chunk))
        return
    while chunk := await asyncio.to_thread(read_chunk, body):
        yield chunk
        if on_progress:
            on_progress(len(chunk))


class AsyncClient(BaseClient):
    """Asyncio client for a Cloche server; the async twin of :class:`~cloche.Client`.

    Args:
        url: Server URL; defaults to ``$CLOCHE_URL`` or ``http://127.0.0.1:8787``.
        api_key: Tenant or admin API key; defaults to ``$CLOCHE_API_KEY``.
        timeout: Seconds to wait when connecting and for ordinary responses.
        transport: Optional httpx async transport (e.g. ``httpx.MockTransport``).

    Attributes:
        sandboxes: Create, look up and list sandboxes.
        tenants: Manage tenants and API keys (admin key required).
        nodes: Inspect worker nodes (admin key required).

    Use it as an async context manager, or await :meth:`close` when done.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._default_headers(), timeout=timeout, transport=transport
        )
        self.sandboxes = AsyncSandboxes(self)
        self.tenants = AsyncTenants(self)
        self.nodes = AsyncNodes(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def health(self) -> Health:
        """Check that the server is up (``GET /healthz``); needs no API key."""
        return await self._call(_api.health())

    # -- sending -----------------------------------------------------------------------

    async def _open(self, call: _api.Call[Any], on_progress: ProgressCallback | None = None) -> httpx.Response:
        """Send ``call`` and return the streaming response once its status is OK."""
        content = None if call.content is None else _aiter_body(call.content, on_progress)
        request = self._http.build_request(**self._request_args(call, content))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                self._check_status(response)
            if call.precheck is not None:
                call.precheck(response)
        except httpx.TransportError as exc:  # the error body broke off
            await response.aclose()
            raise self._transport_error(exc) from exc
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _call(self, call: _api.Call[T], on_progress: ProgressCallback | None = None) -> T:
        """Send ``call``, read the whole response and parse it."""
        response = await self._open(call, on_progress)
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        return self._parse(call, response)

    async def _download(
        self, call: _api.Call[Any], dest: IO[bytes], on_progress: ProgressCallback | None = None
    ) -> int:
        """Stream the response body of ``call`` into ``dest``; return the byte count."""
        total = 0
        response = await self._open(call)
        try:
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                await asyncio.to_thread(dest.write, chunk)
                total += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        return total

    async def _events(self, call: _api.Call[Any]) -> AsyncIterator[ExecEvent]:
        """Send an ``exec/stream`` call and yield its decoded events."""
        response = await self._open(call)
        decoder = SSEDecoder()
        try:
            async for line in response.aiter_lines():
                sse = decoder.feed(line)
                if sse is not None and (event := to_exec_event(sse)) is not None:
                    yield event
            sse = decoder.flush()
            if sse is not None and (event := to_exec_event(sse)) is not None:
                yield event
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()


class AsyncSandboxes:
    """``client.sandboxes``: create, look up and list sandboxes."""

    def __init__(self, client: AsyncClient) -> None:
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
    ) -> AsyncSandbox:
        """Create a sandbox and return its handle; see :meth:`cloche.Client.sandboxes`'s
        ``create`` for the parameters and errors."""
        call = _api.create_sandbox(
            template=template,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            timeout_s=timeout_s,
            name=name,
            metadata=metadata,
            env=env,
        )
        return AsyncSandbox(self._client, await self._client._call(call))

    async def get(self, sandbox_id: str) -> AsyncSandbox:
        """Return a handle for an existing sandbox (raises :class:`NotFound`)."""
        return AsyncSandbox(self._client, await self._client._call(_api.get_sandbox(sandbox_id)))

    async def connect(self, sandbox_id: str) -> AsyncSandbox:
        """Return a handle for an existing sandbox, resuming it first if it is paused."""
        sbx = await self.get(sandbox_id)
        if sbx.state == "paused":
            await sbx.resume()
        return sbx

    async def list(self, state: str | None = None, metadata: Mapping[str, str] | None = None) -> list[AsyncSandbox]:
        """List this tenant's sandboxes, optionally filtered by state and metadata."""
        infos = await self._client._call(_api.list_sandboxes(state, metadata))
        return [AsyncSandbox(self._client, info) for info in infos]


class AsyncFiles:
    """``sandbox.files``: read, write and manage files inside one sandbox."""

    def __init__(self, client: AsyncClient, sandbox_id: str) -> None:
        self._client = client
        self._id = sandbox_id

    async def read(self, path: str) -> bytes:
        """Return the content of the regular file at ``path``."""
        return await self._client._call(_api.read_file(self._id, path))

    async def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the content of the file at ``path`` decoded as text."""
        return (await self.read(path)).decode(encoding, errors)

    async def download(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the file at ``path`` into ``dest``; return the bytes written."""
        return await self._client._download(_api.read_file(self._id, path), dest, on_progress)

    async def write(
        self, path: str, data: bytes | str | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> WriteResult:
        """Atomically create or replace the file at ``path`` (creating missing parent
        directories) with bytes, text or a binary file object."""
        return await self._client._call(_api.write_file(self._id, path, data), on_progress)

    async def list(self, path: str = "/workspace") -> list[Entry]:
        """List the directory at ``path``."""
        return await self._client._call(_api.list_dir(self._id, path))

    async def stat(self, path: str) -> Entry:
        """Describe the entry at ``path``."""
        return await self._client._call(_api.stat(self._id, path))

    async def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        try:
            await self.stat(path)
        except NotFound:
            return False
        return True

    async def mkdir(self, path: str) -> Entry:
        """Create the directory ``path``; return its entry."""
        return await self._client._call(_api.mkdir(self._id, path))

    async def remove(self, path: str, recursive: bool = False) -> None:
        """Delete the file or empty directory at ``path`` (any directory if ``recursive``)."""
        await self._client._call(_api.remove(self._id, path, recursive))

    async def rename(self, src: str, dst: str) -> Entry:
        """Move ``src`` to ``dst``; return the entry at its new path."""
        return await self._client._call(_api.rename(self._id, src, dst))


class AsyncSandbox(SandboxBase):
    """Async handle for one sandbox; ``async with`` kills it when the block exits.

    Attributes:
        files: File operations inside this sandbox.
    """

    def __init__(self, client: AsyncClient, info: SandboxInfo) -> None:
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

    async def set_timeout(self, timeout_s: float) -> AsyncSandbox:
        """Make the sandbox expire ``timeout_s`` seconds from now."""
        self._info = await self._client._call(_api.set_timeout(self.id, timeout_s))
        return self

    async def kill(self, missing_ok: bool = False) -> None:
        """Destroy the sandbox and its files (``missing_ok``: ignore NotFound)."""
        try:
            await self._client._call(_api.kill_sandbox(self.id))
        except NotFound:
            if not missing_ok:
                raise

    def pty_url(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> str:
        """The WebSocket URL of an interactive terminal running ``cmd`` (a shell-quoted
        command line; the server's login shell if omitted)."""
        return _api.pty_url(self._client.url, self.id, cmd=cmd, rows=rows, cols=cols, cwd=cwd)

    def pty(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> ws_connect:
        """Open an interactive terminal: ``async with sbx.pty() as ws: ...``.

        The frame protocol is described in :meth:`cloche.client.sync.Sandbox.pty`.
        """
        from websockets.asyncio.client import connect

        return connect(
            self.pty_url(cmd, rows, cols, cwd),
            additional_headers=self._client.auth_headers(),
            open_timeout=self._client.timeout,
            max_size=None,
            compression=None,
            proxy=None,
        )


class AsyncTenants:
    """``client.tenants``: tenant and API-key administration (admin key required)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        name: str,
        max_sandboxes: int | None = None,
        max_cpu: float | None = None,
        max_memory_mb: int | None = None,
    ) -> NewTenant:
        """Create a tenant with optional quotas; the result holds its first API key."""
        return await self._client._call(
            _api.create_tenant(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
        )

    async def list(self) -> list[Tenant]:
        """List every tenant."""
        return await self._client._call(_api.list_tenants())

    async def create_key(self, tenant_id: str) -> ApiKey:
        """Issue an additional API key for the tenant."""
        return await self._client._call(_api.create_key(tenant_id))

    async def revoke_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of the tenant's API keys."""
        await self._client._call(_api.revoke_key(tenant_id, key_id))


class AsyncNodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return await self._client._call(_api.list_nodes())
