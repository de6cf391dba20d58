"""The blocking client: :class:`Client` and the :class:`Sandbox` handle.

Example::

    from cloche import Client

    with Client() as client, client.sandboxes.create(template="base") as sbx:
        print(sbx.exec(["python3", "-c", "print(1+1)"]).stdout)   # "2\\n"
        sbx.files.write("/workspace/hello.txt", "hi")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
    from websockets.sync.client import ClientConnection

__all__ = ["Client", "Files", "Nodes", "Sandbox", "Sandboxes", "Tenants"]

T = TypeVar("T")


def _iter_body(body: bytes | IO[bytes], on_progress: ProgressCallback | None) -> Iterator[bytes]:
    """Yield ``body`` in chunks, reporting each one to ``on_progress``."""
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        for i in range(0, len(view), CHUNK_SIZE):
            chunk = bytes(view[i : i + CHUNK_SIZE])
            yield chunk
            if on_progress:
                on_progress(len(chunk))
        return
    while chunk := read_chunk(body):
        yield chunk
        if on_progress:
            on_progress(len(chunk))


class Client(BaseClient):
    """Blocking client for a Cloche server.

    Args:
        url: Server URL; defaults to ``$CLOCHE_URL`` or ``http://127.0.0.1:8787``.
        api_key: Tenant or admin API key; defaults to ``$CLOCHE_API_KEY``.
        timeout: Seconds to wait when connecting and for ordinary responses.
        transport: Optional httpx transport (e.g. ``httpx.MockTransport`` in tests).

    Attributes:
        sandboxes: Create, look up and list sandboxes.
        tenants: Manage tenants and API keys (admin key required).
        nodes: Inspect worker nodes (admin key required).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(
            base_url=self.url, headers=self._default_headers(), timeout=timeout, transport=transport
        )
        self.sandboxes = Sandboxes(self)
        self.tenants = Tenants(self)
        self.nodes = Nodes(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def health(self) -> Health:
        """Check that the server is up (``GET /healthz``); needs no API key."""
        return self._call(_api.health())

    # -- sending -----------------------------------------------------------------------

    def _open(self, call: _api.Call[Any], on_progress: ProgressCallback | None = None) -> httpx.Response:
        """Send ``call`` and return the streaming response once its status is OK."""
        content = None if call.content is None else _iter_body(call.content, on_progress)
        request = self._http.build_request(**self._request_args(call, content))
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        try:
            if response.status_code >= 400:
                response.read()
                self._check_status(response)
            if call.precheck is not None:
                call.precheck(response)
        except httpx.TransportError as exc:  # the error body broke off
            response.close()
            raise self._transport_error(exc) from exc
        except BaseException:
            response.close()
            raise
        return response

    def _call(self, call: _api.Call[T], on_progress: ProgressCallback | None = None) -> T:
        """Send ``call``, read the whole response and parse it."""
        response = self._open(call, on_progress)
        try:
            response.read()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()
        return self._parse(call, response)

    def _download(self, call: _api.Call[Any], dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the response body of ``call`` into ``dest``; return the byte count."""
        total = 0
        response = self._open(call)
        try:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                dest.write(chunk)
                total += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()
        return total

    def _events(self, call: _api.Call[Any]) -> Iterator[ExecEvent]:
        """Send an ``exec/stream`` call and yield its decoded events."""
        response = self._open(call)
        decoder = SSEDecoder()
        try:
            for line in response.iter_lines():
                sse = decoder.feed(line)
                if sse is not None and (event := to_exec_event(sse)) is not None:
                    yield event
            sse = decoder.flush()
            if sse is not None and (event := to_exec_event(sse)) is not None:
                yield event
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()


class Sandboxes:
    """``client.sandboxes``: create, look up and list sandboxes."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        template: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        timeout_s: float | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Sandbox:
        """Create a sandbox and return its handle once it is running.

        Args:
            template: Root file-system template (server default if omitted).
            cpu: CPU cores (may be fractional).
            memory_mb: Memory limit in MiB.
            disk_mb: Disk quota in MiB.
            timeout_s: Seconds until the sandbox expires unless extended.
            name: Unique per tenant; creating an existing name returns that sandbox.
            metadata: Free-form string labels, filterable in :meth:`list`.
            env: Environment variables for every command run in the sandbox.

        Raises:
            QuotaExceeded: The tenant is at its sandbox, CPU or memory quota.
            InvalidRequest: A parameter is out of range or the template is unknown.
        """
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
        return Sandbox(self._client, self._client._call(call))

    def get(self, sandbox_id: str) -> Sandbox:
        """Return a handle for an existing sandbox.

        Raises:
            NotFound: No such sandbox for this API key.
        """
        return Sandbox(self._client, self._client._call(_api.get_sandbox(sandbox_id)))

    def connect(self, sandbox_id: str) -> Sandbox:
        """Return a handle for an existing sandbox, resuming it first if it is paused."""
        sbx = self.get(sandbox_id)
        if sbx.state == "paused":
            sbx.resume()
        return sbx

    def list(self, state: str | None = None, metadata: Mapping[str, str] | None = None) -> list[Sandbox]:
        """List this tenant's sandboxes, optionally only those in ``state`` and whose
        metadata contains every ``metadata`` key with the given value."""
        infos = self._client._call(_api.list_sandboxes(state, metadata))
        return [Sandbox(self._client, info) for info in infos]


class Files:
    """``sandbox.files``: read, write and manage files inside one sandbox.

    Relative paths are resolved by the server against ``/workspace``.
    """

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self._client = client
        self._id = sandbox_id

    def read(self, path: str) -> bytes:
        """Return the content of the regular file at ``path``.

        Raises:
            NotFound: The file does not exist.
            InvalidRequest: ``path`` is a directory (or not a regular file).
        """
        return self._client._call(_api.read_file(self._id, path))

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the content of the file at ``path`` decoded as text."""
        return self.read(path).decode(encoding, errors)

    def download(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the file at ``path`` into the binary file object ``dest``.

        Returns:
            The number of bytes written.
        """
        return self._client._download(_api.read_file(self._id, path), dest, on_progress)

    def write(
        self, path: str, data: bytes | str | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> WriteResult:
        """Atomically create or replace the file at ``path``; missing parent directories are created.

        Args:
            path: Destination path in the sandbox.
            data: Bytes, text (written as UTF-8) or a binary file object to stream.
            on_progress: Called with each chunk's size as it is sent.

        Raises:
            PayloadTooLarge: The file exceeds the server's upload limit.
            DiskFull: The sandbox's disk quota is exhausted.
        """
        return self._client._call(_api.write_file(self._id, path, data), on_progress)

    def list(self, path: str = "/workspace") -> list[Entry]:
        """List the directory at ``path``.

        Raises:
            InvalidRequest: ``path`` is not a directory.
        """
        return self._client._call(_api.list_dir(self._id, path))

    def stat(self, path: str) -> Entry:
        """Describe the entry at ``path`` (symlinks are not followed)."""
        return self._client._call(_api.stat(self._id, path))

    def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        try:
            self.stat(path)
        except NotFound:
            return False
        return True

    def mkdir(self, path: str) -> Entry:
        """Create the directory ``path``; return its entry."""
        return self._client._call(_api.mkdir(self._id, path))

    def remove(self, path: str, recursive: bool = False) -> None:
        """Delete the file or empty directory at ``path`` (any directory if ``recursive``)."""
        self._client._call(_api.remove(self._id, path, recursive))

    def rename(self, src: str, dst: str) -> Entry:
        """Move ``src`` to ``dst``; return the entry at its new path."""
        return self._client._call(_api.rename(self._id, src, dst))


class Sandbox(SandboxBase):
    """Handle for one sandbox; cheap to create, holds no connection of its own.

    Used as a context manager, the sandbox is killed when the block exits.

    Attributes:
        files: File operations inside this sandbox.
    """

    def __init__(self, client: Client, info: SandboxInfo) -> None:
        super().__init__(info)
        self._client = client
        self.files = Files(client, info.id)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill(missing_ok=True)

    def refresh(self) -> Sandbox:
        """Re-read the sandbox from the server (updates :attr:`info`/:attr:`state`)."""
        self._info = self._client._call(_api.get_sandbox(self.id))
        return self

    def exec(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult:
        """Run a command to completion and return its exit status and output.

        Args:
            cmd: An argv list, or a string run by ``/bin/sh -c``.
            env: Extra environment variables.
            cwd: Working directory (default ``/workspace``).
            stdin: Text fed to the command's standard input.
            timeout_s: Kill the command after this many seconds (``timed_out`` is set).

        Raises:
            InvalidState: The sandbox is paused or stopped.
        """
        return self._client._call(_api.exec_(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    def exec_stream(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[ExecEvent]:
        """Run a command and yield its events as they happen.

        Yields :class:`ExecStart`, then :class:`ExecOutput` chunks (``type`` is
        ``"stdout"`` or ``"stderr"``), then one :class:`ExecExit`.  The request is sent
        when iteration starts; stop early with ``close()`` on the returned iterator.
        """
        return self._client._events(_api.exec_stream(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    def upload_tar(
        self, path: str, data: bytes | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> ArchiveResult:
        """Extract a tar (optionally gzipped) archive into the directory ``path``.

        Unsafe members (absolute paths, ``..``, device nodes) are skipped and reported
        in :attr:`ArchiveResult.skipped`.
        """
        return self._client._call(_api.upload_tar(self.id, path, data), on_progress)

    def download_tar(self, path: str) -> bytes:
        """Return a tar archive of the directory (or file) at ``path``."""
        return self._client._call(_api.download_tar(self.id, path))

    def download_tar_to(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream a tar archive of ``path`` into ``dest``; return the bytes written."""
        return self._client._download(_api.download_tar(self.id, path), dest, on_progress)

    def pause(self) -> Sandbox:
        """Freeze every process in the sandbox (no CPU use; memory is kept)."""
        self._info = self._client._call(_api.pause(self.id))
        return self

    def resume(self) -> Sandbox:
        """Thaw a paused sandbox (or start a stopped one)."""
        self._info = self._client._call(_api.resume(self.id))
        return self

    def set_timeout(self, timeout_s: float) -> Sandbox:
        """Make the sandbox expire ``timeout_s`` seconds from now."""
        self._info = self._client._call(_api.set_timeout(self.id, timeout_s))
        return self

    def kill(self, missing_ok: bool = False) -> None:
        """Destroy the sandbox and its files.

        Args:
            missing_ok: Do not raise :class:`NotFound` if it is already gone.
        """
        try:
            self._client._call(_api.kill_sandbox(self.id))
        except NotFound:
            if not missing_ok:
                raise

    def pty_url(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> str:
        """The WebSocket URL of an interactive terminal running ``cmd`` (a shell-quoted
        command line; the server's login shell if omitted)."""
        return _api.pty_url(self._client.url, self.id, cmd=cmd, rows=rows, cols=cols, cwd=cwd)

    def pty(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> ClientConnection:
        """Open an interactive terminal; use as ``with sbx.pty() as ws: ...``.

        Send keystrokes as binary frames and resizes as text frames
        ``{"type": "resize", "rows": R, "cols": C}``; the server sends terminal output
        as binary frames and finally a text frame ``{"type": "exit", "exit_code": N}``.
        """
        from websockets.sync.client import connect

        return connect(
            self.pty_url(cmd, rows, cols, cwd),
            additional_headers=self._client.auth_headers(),
            open_timeout=self._client.timeout,
            max_size=None,
            compression=None,
            proxy=None,
        )


class Tenants:
    """``client.tenants``: tenant and API-key administration (admin key required)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        max_sandboxes: int | None = None,
        max_cpu: float | None = None,
        max_memory_mb: int | None = None,
    ) -> NewTenant:
        """Create a tenant with optional quotas; the result holds its first API key."""
        return self._client._call(
            _api.create_tenant(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
        )

    def list(self) -> list[Tenant]:
        """List every tenant."""
        return self._client._call(_api.list_tenants())

    def create_key(self, tenant_id: str) -> ApiKey:
        """Issue an additional API key for the tenant."""
        return self._client._call(_api.create_key(tenant_id))

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of the tenant's API keys; it stops working immediately."""
        self._client._call(_api.revoke_key(tenant_id, key_id))


class Nodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return self._client._call(_api.list_nodes())
