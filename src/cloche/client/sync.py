"""The blocking client: :class:`Client` and the :class:`Sandbox` handle.

Example::

    from cloche import Client

    with Client() as client, client.sandboxes.create(template="base") as sbx:
        print(sbx.exec(["python3", "-c", "print(1+1)"]).stdout)   # "2\\n"
        sbx.files.write("/workspace/hello.txt", "hi")
"""

from __future__ import annotations

import time
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
    AgentInfo,
    AgentResponse,
    ApiKey,
    App,
    ArchiveResult,
    BatchResult,
    CodeResult,
    Entry,
    ExecEvent,
    ExecResult,
    Health,
    IdlePolicy,
    KeyInfo,
    KeyPage,
    LogEntry,
    LogPage,
    NetworkSpec,
    NetworkStatus,
    NewTenant,
    NodeInfo,
    PortUrls,
    SandboxInfo,
    SecretInfo,
    SecretKeyRotation,
    SnapshotInfo,
    StateValue,
    TemplateInfo,
    Tenant,
    WriteResult,
)

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = [
    "Agent",
    "AgentStream",
    "Agents",
    "Apps",
    "Client",
    "Files",
    "Nodes",
    "Sandbox",
    "Sandboxes",
    "Secrets",
    "Snapshots",
    "State",
    "Tenants",
]

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
        snapshots: List and delete named snapshots of sandboxes' files.
        secrets: Store secrets sandboxes can send (to their hosts) without holding them.
        apps: Deploy apps, whose per-key agents :meth:`agents` reaches.
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
        self.snapshots = Snapshots(self)
        self.secrets = Secrets(self)
        self.apps = Apps(self)
        self.tenants = Tenants(self)
        self.nodes = Nodes(self)
        self.templates = Templates(self)

    def agents(self, app: str) -> Agents:
        """The agents of ``app``: ``client.agents("memo")["alice"].invoke(json=...)``."""
        return Agents(self, app)

    def state(self, namespace: str) -> State:
        """The durable KV and log of a state namespace (created by its first write)."""
        return State(self, namespace)

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
            if self._is_error(call, response):
                response.read()
                self._check_status(call, response)
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
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        on_timeout: str | None = None,
        on_resume: str | None = None,
        snapshot: str | None = None,
        wait_s: float | None = None,
        region: str | None = None,
        network: NetworkSpec | None = None,
        isolation: str | None = None,
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
            idle: Idle policy, e.g. ``{"pause_after_s": 60, "hibernate_after_s": 900}``
                (template defaults if omitted).
            on_timeout: What happens at ``timeout_s``: ``"kill"`` (default) or
                ``"hibernate"``.
            on_resume: Shell command run after each wake from hibernated or stopped
                (processes are restarted, not restored).
            snapshot: Start from the files of this named snapshot (its id).
            wait_s: Seconds to wait in the admission queue when the node is full (server
                default if omitted); then :class:`Unavailable` with ``retry_after``.
            region: The user's region, a hint to place the sandbox close to them.
            network: ``"none"`` (loopback only), ``"internet"``, or a policy: a
                :class:`NetworkPolicy` or the same as a dict, e.g.
                ``{"allow_out": ["pypi.org", "*.pythonhosted.org"]}`` (server default
                if omitted, normally ``"internet"``).
            isolation: ``"runc"`` (namespaces and seccomp on the host kernel) or
                ``"gvisor"`` (a user-space kernel: stronger, slower; see the README's
                "Isolation tiers"). Server default if omitted.

        Raises:
            QuotaExceeded: The tenant is at its sandbox, CPU or memory quota.
            Unavailable: No room came free within ``wait_s``.
            InvalidRequest: A parameter is out of range, the template is unknown, or
                the network policy is malformed (code ``invalid_spec``, the message
                names the field, e.g. ``network.allow_out[0]: ...``).
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
            idle=idle,
            on_timeout=on_timeout,
            on_resume=on_resume,
            snapshot=snapshot,
            wait_s=wait_s,
            region=region,
            network=network,
            isolation=isolation,
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

    def run_code(self, code: str, env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> CodeResult:
        """Run Python in the sandbox's kernel, which keeps its variables, imports and
        definitions between calls (it runs as root in /workspace and is restarted,
        empty, after the sandbox paused or hibernated).

        Args:
            code: Python source; the value of a last expression is in ``results``.
            env: Environment variables during this cell.
            timeout_s: Interrupt the cell after this many seconds (``error`` says so).

        An exception in the code is ``result.error``, not a raised error.
        """
        return self._client._call(_api.run_code(self.id, code, env=env, timeout_s=timeout_s))

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

    def resize(
        self,
        cpu: float | None = None,
        memory_mb: int | None = None,
        pids: int | None = None,
        allow_move: bool = False,
    ) -> Sandbox:
        """Change the sandbox's cpu, memory and pids limits in place, without a restart.

        Only the limits given change.  A running sandbox is admitted when its node has
        room for the difference; a stopped or hibernated one gets the new limits when it
        next starts.  :attr:`info` shows the new ``cpu`` and ``memory_mb``.

        Args:
            cpu: CPU cores (may be fractional).
            memory_mb: Memory limit in MiB.
            pids: Maximum number of processes and threads.
            allow_move: If the node has no room, move the sandbox (hibernate, then resume
                on a node that fits) instead of failing.

        Raises:
            Conflict: The node has no room for the new limits (``insufficient_capacity``),
                or the sandbox uses more memory than the new limit (``in_use``).
            QuotaExceeded: The tenant's CPU or memory quota would be exceeded.
            InvalidRequest: A limit is out of range.
        """
        call = _api.resize_sandbox(self.id, cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=allow_move)
        self._info = self._client._call(call)
        return self

    def set_timeout(self, timeout_s: float) -> Sandbox:
        """Make the sandbox expire ``timeout_s`` seconds from now."""
        self._info = self._client._call(_api.set_timeout(self.id, timeout_s))
        return self

    def hibernate(self, keep_local: bool = True) -> Sandbox:
        """Snapshot the sandbox's files and release its CPU, memory and processes.

        Any later call that needs it running (exec, files, :meth:`resume`) wakes it with
        every file intact; processes are restarted, not restored.

        Args:
            keep_local: Keep the node's copy of the files too, for the fastest wake
                (``False``: the next wake restores them from the snapshot store).
        """
        self._info = self._client._call(_api.hibernate(self.id, keep_local))
        return self

    def fork(self, name: str | None = None, metadata: Mapping[str, str] | None = None) -> Sandbox:
        """Start a new sandbox with this one's current files (running or hibernated).

        Args:
            name: Name of the new sandbox.
            metadata: Its labels (default: this sandbox's).
        """
        return Sandbox(self._client, self._client._call(_api.fork(self.id, name, metadata)))

    def snapshot(self, name: str) -> SnapshotInfo:
        """Save the sandbox's current files as the named snapshot ``name``; start new
        sandboxes from it with ``client.sandboxes.create(snapshot=info.id)``.

        Raises:
            Conflict: The tenant already has a snapshot with this name.
        """
        return self._client._call(_api.create_snapshot(self.id, name))

    def network(self) -> NetworkStatus:
        """The sandbox's network: the policy in force, its address and its traffic and
        DNS counters (also kept in :attr:`info`)."""
        status = self._client._call(_api.get_network(self.id))
        self._info = self._info.model_copy(update={"network": status})
        return status

    def set_network(self, policy: NetworkSpec) -> NetworkStatus:
        """Replace the sandbox's network policy atomically; it is in force at once.

        Open connections the new policy denies are cut.  A paused or hibernated sandbox
        gets it when it wakes; it survives pause, hibernate and fork.

        Args:
            policy: ``"none"``, ``"internet"``, a :class:`NetworkPolicy` or the same as a
                dict (it replaces the old policy entirely, nothing is merged).

        Returns:
            The new status (the normalised policy, the address and the counters).

        Raises:
            InvalidRequest: The policy is malformed (code ``invalid_spec``; the message
                names the field, e.g. ``network.deny_out[2]: ...``).
        """
        status = self._client._call(_api.set_network(self.id, policy))
        self._info = self._info.model_copy(update={"network": status})
        return status

    def port_urls(self, port: int, *, expires_s: int = 3600) -> PortUrls:
        """Where ``port`` (a server the sandbox runs) is reachable from outside.

        Args:
            port: The port inside the sandbox (1-65535).
            expires_s: Lifetime of the signed URL in the answer, in seconds.

        Returns:
            The host-form and path-form URLs, the traffic token (send it as
            ``X-Cloche-Traffic-Token``; ``None`` for a ``public`` sandbox) and a signed URL.

        Raises:
            ValueError: ``port`` is not a valid port number.
        """
        return self._client._call(_api.port_urls(self.id, port, expires_s))

    def url(self, port: int, *, signed: bool = False, expires_s: int = 3600) -> str:
        """The host-form URL of ``port``, e.g. ``http://8000-sb_x.localhost:8787/``.

        Unless the sandbox's policy is ``public``, requests to it need the traffic token
        (see :meth:`port_urls`), or use ``signed=True``.

        Args:
            port: The port inside the sandbox (1-65535).
            signed: Return the signed URL instead, which needs no token until it
                expires (a public sandbox's plain URL when the server signs none).
            expires_s: Lifetime of the signed URL, in seconds.
        """
        urls = self.port_urls(port, expires_s=expires_s)
        return (urls.signed_url or urls.url) if signed else urls.url

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


class Templates:
    """``client.templates``: the root filesystems sandboxes are built on."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[TemplateInfo]:
        """Every template (``base`` included)."""
        return self._client._call(_api.list_templates())

    def import_tar(self, name: str, archive: bytes | IO[bytes], on_base: bool = False,
                   on_progress: ProgressCallback | None = None) -> TemplateInfo:  # fmt: skip
        """Import a rootfs tarball as template ``name`` (admin key). With ``on_base`` the
        files are laid over ``base`` (the host's /usr, read-only), e.g. an agent's code.
        ``on_progress(nbytes)`` is called as the archive is sent."""
        return self._client._call(_api.import_template(name, archive, on_base), on_progress)

    def delete(self, name: str) -> None:
        """Delete a template; refused (Conflict) while sandboxes use it."""
        self._client._call(_api.delete_template(name))


class Nodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return self._client._call(_api.list_nodes())


class Snapshots:
    """``client.snapshots``: named snapshots of sandboxes' files.

    Create one with :meth:`Sandbox.snapshot` (or :meth:`create`), start a sandbox from it
    with ``client.sandboxes.create(snapshot=snapshot.id)``.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, sandbox_id: str, name: str) -> SnapshotInfo:
        """Save the current files of a sandbox (running or hibernated) as ``name``.

        Raises:
            Conflict: The tenant already has a snapshot with this name.
        """
        return self._client._call(_api.create_snapshot(sandbox_id, name))

    def list(self) -> list[SnapshotInfo]:
        """List this tenant's snapshots."""
        return self._client._call(_api.list_snapshots())

    def get(self, snapshot_id: str) -> SnapshotInfo:
        """Describe one snapshot (raises :class:`NotFound`)."""
        return self._client._call(_api.get_snapshot(snapshot_id))

    def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot; sandboxes already created from it keep their files."""
        self._client._call(_api.delete_snapshot(snapshot_id))


class Secrets:
    """``client.secrets``: values the tenant's sandboxes can send without holding them.

    A secret is referenced as ``${secret:NAME}`` in a header of a sandbox's
    ``network.rules``; the node fills it in on the way out, and only for requests to the
    secret's ``hosts``. It is stored encrypted and never returned by any call.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, value: str, hosts: Sequence[str]) -> SecretInfo:
        """Store a secret.

        Args:
            name: Letters, digits, ``_``, ``.`` and ``-`` (at most 64, not starting with
                a digit, ``.`` or ``-``).
            value: At most 8 KiB, one line (it is sent in an HTTP header).
            hosts: Host names or ``*.wildcard`` names it may be sent to (no addresses).

        Raises:
            Conflict: The tenant already has a secret with this name.
            InvalidRequest: A bad name, value or host (the message names the field).
        """
        return self._client._call(_api.create_secret(name, value, hosts))

    def list(self) -> list[SecretInfo]:
        """List this tenant's secrets (names and hosts, never values)."""
        return self._client._call(_api.list_secrets())

    def get(self, name: str) -> SecretInfo:
        """Describe one secret (raises :class:`NotFound`)."""
        return self._client._call(_api.get_secret(name))

    def update(self, name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> SecretInfo:
        """Replace the value, the hosts or both; with both, a missing secret is created.

        Raises:
            NotFound: No such secret, and not both ``value`` and ``hosts`` were given.
        """
        return self._client._call(_api.update_secret(name, value, hosts))

    def delete(self, name: str) -> None:
        """Delete a secret (raises :class:`NotFound`); requests using it are refused from then on."""
        self._client._call(_api.delete_secret(name))

    def rotate_key(self, drop_old: bool = False) -> SecretKeyRotation:
        """Admin: re-encrypt every secret under a new key. The old keys stay in the
        server's key file unless ``drop_old`` (then only backups need them)."""
        return self._client._call(_api.rotate_secret_key(drop_old))


class Apps:
    """``client.apps``: deploy the apps whose agents ``client.agents(app)`` reaches."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def deploy(
        self,
        name: str,
        command: Sequence[str],
        template: str | None = None,
        env: Mapping[str, str] | None = None,
        setup: str | Sequence[str] | None = None,
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        max_concurrency: int | None = None,
        startup_timeout_s: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
    ) -> App:
        """Deploy an app, or redeploy it as a new version.

        Every key gets its own sandbox running ``command``, created on its first
        invocation; a redeploy reaches running agents at their next invocation.

        Args:
            name: App name (lowercase letters, digits and ``-``).
            command: The agent's server (argv); it must serve HTTP on the unix socket
                at ``$CLOCHE_AGENT_SOCKET``.
            template: Root file-system template of the agents' sandboxes.
            env: Environment variables of the agents (``CLOCHE_AGENT_KEY`` and
                ``CLOCHE_APP`` are always set).
            setup: Run once in each new instance before the server starts (a shell
                string or an argv list).
            idle: When idle agents are paused and hibernated (server default: pause
                after 60 s, hibernate after 15 min).
            max_concurrency: Invocations delivered at once to one agent (default 1: in
                order, one at a time).
            startup_timeout_s: How long to wait for the agent's socket (default 30).
            cpu: CPU cores per agent.
            memory_mb: Memory limit per agent in MiB.
            disk_mb: Disk quota per agent in MiB.

        Example::

            from cloche.examples import memo_app
            client.apps.deploy("memo", **memo_app())
        """
        call = _api.deploy_app(
            name,
            command=command,
            template=template,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            env=env,
            setup=setup,
            idle=idle,
            max_concurrency=max_concurrency,
            startup_timeout_s=startup_timeout_s,
        )
        return self._client._call(call)

    def list(self) -> list[App]:
        """List this tenant's apps."""
        return self._client._call(_api.list_apps())

    def get(self, name: str) -> App:
        """Describe one app (raises :class:`NotFound`)."""
        return self._client._call(_api.get_app(name))

    def delete(self, name: str, state: bool = False) -> None:
        """Delete an app and every agent's sandbox; with ``state``, their state too."""
        self._client._call(_api.delete_app(name, state))


class Agents:
    """``client.agents(app)``: the agents of one app, one per key; ``agents[key]`` is one."""

    def __init__(self, client: Client, app: str) -> None:
        self._client = client
        self.app = app

    def __getitem__(self, key: str) -> Agent:
        return Agent(self._client, self.app, key)

    def __repr__(self) -> str:
        return f"Agents(app={self.app!r})"

    def list(self) -> list[AgentInfo]:
        """List the app's agents with their state, sandbox and last activity."""
        return self._client._call(_api.list_agents(self.app))


class Agent:
    """The agent of one key of an app: the address of one user's own instance.

    Nothing is created until the first :meth:`invoke`; the handle holds no connection.
    """

    def __init__(self, client: Client, app: str, key: str) -> None:
        self._client = client
        self.app = app
        self.key = key

    def __repr__(self) -> str:
        return f"Agent(app={self.app!r}, key={self.key!r})"

    def invoke(
        self,
        body: bytes | str | IO[bytes] = b"",
        *,
        json: Any = _api._NO_JSON,
        path: str = "",
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = _api.INVOKE_TIMEOUT,
    ) -> AgentResponse:
        """Send a request to this key's agent and return its answer, whatever its status.

        The instance is created on first use, woken if paused or hibernated, and its
        server (re)started if needed.

        Args:
            body: The raw request body (``bytes``, text, or a binary file to stream).
            json: A JSON value to send instead of ``body``.
            path: Path below the agent's root (``"v1/chat"`` reaches ``/v1/chat``).
            method: GET, POST, PUT, PATCH or DELETE.
            headers: Extra headers for the agent.
            params: Query parameters for the agent.
            timeout: Seconds to wait for the answer (``None``: forever).

        Returns:
            The agent's status, headers and body (``.json()``, ``.text``, ``.ok``).

        Raises:
            NotFound: No such app.
            ServerError: The agent could not be started or crashed (codes
                ``agent_exited``, ``agent_not_ready``, ``agent_crashed``,
                ``agent_setup_failed``), with the end of its output in the message.
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return self._client._call(call)

    def invoke_stream(
        self,
        body: bytes | str | IO[bytes] = b"",
        *,
        json: Any = _api._NO_JSON,
        path: str = "",
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = _api.INVOKE_TIMEOUT,
    ) -> AgentStream:
        """Like :meth:`invoke`, but stream the answer: iterate for the body's chunks as
        the agent sends them (``timeout`` then bounds the wait between chunks)::

            with agent.invoke_stream(json={"message": "hi"}) as stream:
                print(stream.status_code)
                for chunk in stream:
                    sys.stdout.buffer.write(chunk)
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return AgentStream(self._client, call)

    def info(self) -> AgentInfo:
        """The agent's state, sandbox and last activity (raises :class:`NotFound` before
        its first invocation)."""
        return self._client._call(_api.get_agent(self.app, self.key))

    def sandbox(self) -> Sandbox:
        """A handle on the agent's sandbox (to exec, read files, hibernate, ...)."""
        return self._client.sandboxes.get(self.info().sandbox_id)

    def delete(self, state: bool = False) -> None:
        """Remove the agent's instance (the next invocation starts afresh); with
        ``state``, delete its state too."""
        self._client._call(_api.delete_agent(self.app, self.key, state))


class AgentStream:
    """A streamed agent answer: iterate for ``bytes`` chunks.

    The request is sent when iteration starts or :attr:`status_code`/:attr:`headers` is
    first read; the connection is released at the end, on :meth:`close`, or when a
    ``with`` block exits.
    """

    def __init__(self, client: Client, call: _api.Call[Any]) -> None:
        self._client = client
        self._call = call
        self._response: httpx.Response | None = None

    def open(self) -> AgentStream:
        """Send the request and wait for the status and headers (idempotent)."""
        if self._response is None:
            self._response = self._client._open(self._call)
        return self

    @property
    def status_code(self) -> int:
        """The agent's HTTP status."""
        return self._opened().status_code

    @property
    def headers(self) -> httpx.Headers:
        """The agent's response headers."""
        return self._opened().headers

    def _opened(self) -> httpx.Response:
        self.open()
        assert self._response is not None
        return self._response

    def __iter__(self) -> Iterator[bytes]:
        response = self._opened()
        try:
            yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._client._transport_error(exc) from exc
        finally:
            response.close()

    def close(self) -> None:
        """Release the connection (stops reading the answer)."""
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> AgentStream:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class State:
    """``client.state(namespace)``: a durable, versioned KV and an append-only log.

    Namespaces belong to the tenant and are created by their first write; a sandbox's
    own namespace is named after its id (``client.state(sandbox.id)``).  Versions only increase;
    pass one back as ``if_match`` for compare-and-set.
    """

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"State(namespace={self.namespace!r})"

    # -- kv ----------------------------------------------------------------------------

    def get(self, key: str) -> StateValue | None:
        """The value of ``key`` with its version, or ``None`` if it does not exist."""
        try:
            return self._client._call(_api.kv_get(self.namespace, key))
        except NotFound:
            return None

    def put(
        self,
        key: str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ttl_s: float | None = None,
    ) -> int:
        """Store ``value`` (text is encoded as UTF-8) under ``key``; return its new version.

        Args:
            if_match: Only if the key is at this version now.
            if_none_match: Only if the key does not exist.
            ttl_s: Expire the key after this many seconds.

        Raises:
            PreconditionFailed: A condition did not hold (``current_version`` says why).
            PayloadTooLarge: The value exceeds the server's limit (1 MiB by default).
        """
        return self._client._call(
            _api.kv_put(self.namespace, key, value, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl_s)
        )

    def delete(self, key: str, *, if_match: int | None = None) -> None:
        """Delete ``key`` (no error if it does not exist, unless ``if_match`` is given).

        Raises:
            PreconditionFailed: ``if_match`` is not the key's current version.
        """
        self._client._call(_api.kv_delete(self.namespace, key, if_match=if_match))

    def list(self, prefix: str = "", *, page_size: int = 100) -> Iterator[KeyInfo]:
        """Iterate over the live keys starting with ``prefix`` in byte order, fetching
        ``page_size`` at a time."""
        cursor: str | None = None
        while True:
            page = self.list_page(prefix, cursor=cursor, limit=page_size)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def list_page(self, prefix: str = "", *, cursor: str | None = None, limit: int = 100) -> KeyPage:
        """One page of :meth:`list`; pass ``next_cursor`` back as ``cursor``."""
        return self._client._call(_api.kv_list(self.namespace, prefix, cursor, limit))

    def batch(self, ops: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Apply several operations atomically, in order: all of them or none.

        Each op is a dict: ``{"op": "put", "key": k, "value": bytes | str, "if_match": v,
        "if_none_match": True, "ttl_s": s}``, ``{"op": "delete", "key": k, "if_match": v}``
        or ``{"op": "check", "key": k, "if_match": v}`` (asserts only).

        Raises:
            PreconditionFailed: An op's condition failed (``index`` says which); nothing
                was applied.
        """
        return self._client._call(_api.kv_batch(self.namespace, ops))

    # -- log ---------------------------------------------------------------------------

    def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        """Append an entry to the log; return its sequence number.

        With ``idempotency_key``, a retry of the same append returns the original
        sequence number and adds nothing.
        """
        return self._client._call(_api.log_append(self.namespace, data, idempotency_key=idempotency_key))

    def read(self, after: int = 0, limit: int = 100) -> LogPage:
        """Up to ``limit`` entries with a sequence number above ``after``, oldest first."""
        return self._client._call(_api.log_read(self.namespace, after, limit))

    def wait(self, after: int = 0, timeout_s: float = 30.0, limit: int = 100) -> LogPage:
        """Like :meth:`read`, but wait up to ``timeout_s`` for an entry after ``after`` to
        arrive (long polls of at most :data:`~cloche.client._api.LONG_POLL_S` each); the
        page is empty if none did."""
        deadline = time.monotonic() + timeout_s
        remaining = timeout_s
        while True:
            wait_s = min(remaining, _api.LONG_POLL_S)
            page = self._client._call(_api.log_read(self.namespace, after, limit, wait_s=wait_s))
            if page.items or remaining <= _api.LONG_POLL_S:
                return page
            remaining = max(0.0, deadline - time.monotonic())

    def follow(self, after: int = 0, wait_s: float = _api.LONG_POLL_S) -> Iterator[LogEntry]:
        """Iterate over the log's entries after ``after``, then over new ones as they are
        appended, forever (long polls of ``wait_s``)."""
        while True:
            page = self.wait(after, wait_s)
            yield from page.items
            if page.items:
                after = page.items[-1].seq

    def trim(self, upto: int) -> int:
        """Drop every entry up to ``upto``; return the oldest sequence number kept."""
        return self._client._call(_api.log_trim(self.namespace, upto))

    # -- grants ------------------------------------------------------------------------

    def grant(self, sandbox_id: str) -> None:
        """Let one of your sandboxes use this namespace from inside (``cloche-state -n``)."""
        self._client._call(_api.grant(self.namespace, sandbox_id))

    def revoke(self, sandbox_id: str) -> None:
        """Withdraw a :meth:`grant`."""
        self._client._call(_api.revoke(self.namespace, sandbox_id))

    def grants(self) -> list[str]:
        """The ids of the sandboxes granted this namespace."""
        return self._client._call(_api.list_grants(self.namespace))
