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
import time
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
    from websockets.asyncio.client import connect as ws_connect

__all__ = [
    "AsyncAgent",
    "AsyncAgentStream",
    "AsyncAgents",
    "AsyncApps",
    "AsyncClient",
    "AsyncFiles",
    "AsyncNodes",
    "AsyncSandbox",
    "AsyncSandboxes",
    "AsyncSecrets",
    "AsyncSnapshots",
    "AsyncState",
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
        snapshots: List and delete named snapshots of sandboxes' files.
        secrets: Store secrets sandboxes can send (to their hosts) without holding them.
        apps: Deploy apps, whose per-key agents :meth:`agents` reaches.
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
        self.snapshots = AsyncSnapshots(self)
        self.secrets = AsyncSecrets(self)
        self.apps = AsyncApps(self)
        self.tenants = AsyncTenants(self)
        self.nodes = AsyncNodes(self)
        self.templates = AsyncTemplates(self)

    def agents(self, app: str) -> AsyncAgents:
        """The agents of ``app``: ``await client.agents("memo")["alice"].invoke(json=...)``."""
        return AsyncAgents(self, app)

    def state(self, namespace: str) -> AsyncState:
        """The durable KV and log of a state namespace (created by its first write)."""
        return AsyncState(self, namespace)

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
            if self._is_error(call, response):
                await response.aread()
                self._check_status(call, response)
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
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        on_timeout: str | None = None,
        on_resume: str | None = None,
        snapshot: str | None = None,
        wait_s: float | None = None,
        region: str | None = None,
        network: NetworkSpec | None = None,
        isolation: str | None = None,
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
            idle=idle,
            on_timeout=on_timeout,
            on_resume=on_resume,
            snapshot=snapshot,
            wait_s=wait_s,
            region=region,
            network=network,
            isolation=isolation,
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
        status = await self._client._call(_api.get_network(self.id))
        self._info = self._info.model_copy(update={"network": status})
        return status

    async def set_network(self, policy: NetworkSpec) -> NetworkStatus:
        """Replace the sandbox's network policy atomically (live, cutting connections it
        denies); see :meth:`cloche.Sandbox.set_network` for the parameters and errors."""
        status = await self._client._call(_api.set_network(self.id, policy))
        self._info = self._info.model_copy(update={"network": status})
        return status

    async def port_urls(self, port: int, *, expires_s: int = 3600) -> PortUrls:
        """Where ``port`` is reachable from outside: URLs, traffic token and signed URL;
        see :meth:`cloche.Sandbox.port_urls`."""
        return await self._client._call(_api.port_urls(self.id, port, expires_s))

    async def url(self, port: int, *, signed: bool = False, expires_s: int = 3600) -> str:
        """The host-form URL of ``port`` (with ``signed``, the signed URL that needs no
        token until it expires); see :meth:`cloche.Sandbox.url`."""
        urls = await self.port_urls(port, expires_s=expires_s)
        return (urls.signed_url or urls.url) if signed else urls.url

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


class AsyncTemplates:
    """``client.templates``: the root filesystems sandboxes are built on."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> list[TemplateInfo]:
        """Every template (``base`` included)."""
        return await self._client._call(_api.list_templates())

    async def import_tar(self, name: str, archive: bytes | IO[bytes], on_base: bool = False,
                         on_progress: ProgressCallback | None = None) -> TemplateInfo:  # fmt: skip
        """Import a rootfs tarball as template ``name`` (admin key); see the sync client."""
        return await self._client._call(_api.import_template(name, archive, on_base), on_progress)

    async def delete(self, name: str) -> None:
        """Delete a template; refused (Conflict) while sandboxes use it."""
        await self._client._call(_api.delete_template(name))


class AsyncNodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return await self._client._call(_api.list_nodes())


class AsyncSnapshots:
    """``client.snapshots``: named snapshots of sandboxes' files (see :class:`cloche.client.sync.Snapshots`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, sandbox_id: str, name: str) -> SnapshotInfo:
        """Save the current files of a sandbox as ``name`` (raises :class:`Conflict` if taken)."""
        return await self._client._call(_api.create_snapshot(sandbox_id, name))

    async def list(self) -> list[SnapshotInfo]:
        """List this tenant's snapshots."""
        return await self._client._call(_api.list_snapshots())

    async def get(self, snapshot_id: str) -> SnapshotInfo:
        """Describe one snapshot (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_snapshot(snapshot_id))

    async def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot; sandboxes already created from it keep their files."""
        await self._client._call(_api.delete_snapshot(snapshot_id))


class AsyncSecrets:
    """``client.secrets``: values sandboxes can send without holding them (see
    :class:`cloche.client.sync.Secrets`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, name: str, value: str, hosts: Sequence[str]) -> SecretInfo:
        """Store a secret sendable only to ``hosts`` (raises :class:`Conflict` if the name is taken)."""
        return await self._client._call(_api.create_secret(name, value, hosts))

    async def list(self) -> list[SecretInfo]:
        """List this tenant's secrets (names and hosts, never values)."""
        return await self._client._call(_api.list_secrets())

    async def get(self, name: str) -> SecretInfo:
        """Describe one secret (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_secret(name))

    async def update(self, name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> SecretInfo:
        """Replace the value, the hosts or both; with both, a missing secret is created."""
        return await self._client._call(_api.update_secret(name, value, hosts))

    async def delete(self, name: str) -> None:
        """Delete a secret (raises :class:`NotFound`)."""
        await self._client._call(_api.delete_secret(name))

    async def rotate_key(self, drop_old: bool = False) -> SecretKeyRotation:
        """Admin: re-encrypt every secret under a new key (old keys kept unless ``drop_old``)."""
        return await self._client._call(_api.rotate_secret_key(drop_old))


class AsyncApps:
    """``client.apps``: deploy apps (see :class:`cloche.client.sync.Apps`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def deploy(
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
        """Deploy an app, or redeploy it as a new version; the parameters are those of
        :meth:`cloche.client.sync.Apps.deploy`."""
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
        return await self._client._call(call)

    async def list(self) -> list[App]:
        """List this tenant's apps."""
        return await self._client._call(_api.list_apps())

    async def get(self, name: str) -> App:
        """Describe one app (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_app(name))

    async def delete(self, name: str, state: bool = False) -> None:
        """Delete an app and every agent's sandbox; with ``state``, their state too."""
        await self._client._call(_api.delete_app(name, state))


class AsyncAgents:
    """``client.agents(app)``: the agents of one app; ``agents[key]`` is one."""

    def __init__(self, client: AsyncClient, app: str) -> None:
        self._client = client
        self.app = app

    def __getitem__(self, key: str) -> AsyncAgent:
        return AsyncAgent(self._client, self.app, key)

    def __repr__(self) -> str:
        return f"AsyncAgents(app={self.app!r})"

    async def list(self) -> list[AgentInfo]:
        """List the app's agents with their state, sandbox and last activity."""
        return await self._client._call(_api.list_agents(self.app))


class AsyncAgent:
    """The agent of one key of an app (see :class:`cloche.client.sync.Agent`)."""

    def __init__(self, client: AsyncClient, app: str, key: str) -> None:
        self._client = client
        self.app = app
        self.key = key

    def __repr__(self) -> str:
        return f"AsyncAgent(app={self.app!r}, key={self.key!r})"

    async def invoke(
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
        """Send a request to this key's agent and return its answer, whatever its status;
        see :meth:`cloche.client.sync.Agent.invoke`."""
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return await self._client._call(call)

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
    ) -> AsyncAgentStream:
        """Like :meth:`invoke`, but stream the answer::

        async with agent.invoke_stream(json={"message": "hi"}) as stream:
            print(stream.status_code)
            async for chunk in stream:
                ...
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return AsyncAgentStream(self._client, call)

    async def info(self) -> AgentInfo:
        """The agent's state, sandbox and last activity (NotFound before its first invocation)."""
        return await self._client._call(_api.get_agent(self.app, self.key))

    async def sandbox(self) -> AsyncSandbox:
        """A handle on the agent's sandbox."""
        return await self._client.sandboxes.get((await self.info()).sandbox_id)

    async def delete(self, state: bool = False) -> None:
        """Remove the agent's instance; with ``state``, delete its state too."""
        await self._client._call(_api.delete_agent(self.app, self.key, state))


class AsyncAgentStream:
    """A streamed agent answer: ``async for chunk in stream`` yields ``bytes``.

    The request is sent by :meth:`open` (``async with`` calls it) or when iteration
    starts; :attr:`status_code` and :attr:`headers` are available once it is open.
    """

    def __init__(self, client: AsyncClient, call: _api.Call[Any]) -> None:
        self._client = client
        self._call = call
        self._response: httpx.Response | None = None

    async def open(self) -> AsyncAgentStream:
        """Send the request and wait for the status and headers (idempotent)."""
        if self._response is None:
            self._response = await self._client._open(self._call)
        return self

    def _opened(self) -> httpx.Response:
        if self._response is None:
            raise RuntimeError("the stream is not open yet: use `async with` or `await stream.open()`")
        return self._response

    @property
    def status_code(self) -> int:
        """The agent's HTTP status."""
        return self._opened().status_code

    @property
    def headers(self) -> httpx.Headers:
        """The agent's response headers."""
        return self._opened().headers

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self.open()
        response = self._opened()
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise self._client._transport_error(exc) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Release the connection (stops reading the answer)."""
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> AsyncAgentStream:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncState:
    """``client.state(namespace)``: a durable, versioned KV and an append-only log
    (see :class:`cloche.client.sync.State`)."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"AsyncState(namespace={self.namespace!r})"

    async def get(self, key: str) -> StateValue | None:
        """The value of ``key`` with its version, or ``None`` if it does not exist."""
        try:
            return await self._client._call(_api.kv_get(self.namespace, key))
        except NotFound:
            return None

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ttl_s: float | None = None,
    ) -> int:
        """Store ``value`` under ``key``; return its new version (raises
        :class:`PreconditionFailed` when ``if_match`` / ``if_none_match`` does not hold)."""
        return await self._client._call(
            _api.kv_put(self.namespace, key, value, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl_s)
        )

    async def delete(self, key: str, *, if_match: int | None = None) -> None:
        """Delete ``key`` (raises :class:`PreconditionFailed` if ``if_match`` does not hold)."""
        await self._client._call(_api.kv_delete(self.namespace, key, if_match=if_match))

    async def list(self, prefix: str = "", *, page_size: int = 100) -> AsyncIterator[KeyInfo]:
        """Iterate (``async for``) over the live keys starting with ``prefix``, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_page(prefix, cursor=cursor, limit=page_size)
            for item in page.items:
                yield item
            cursor = page.next_cursor
            if not cursor:
                return

    async def list_page(self, prefix: str = "", *, cursor: str | None = None, limit: int = 100) -> KeyPage:
        """One page of :meth:`list`; pass ``next_cursor`` back as ``cursor``."""
        return await self._client._call(_api.kv_list(self.namespace, prefix, cursor, limit))

    async def batch(self, ops: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Apply several operations atomically; see :meth:`cloche.client.sync.State.batch`."""
        return await self._client._call(_api.kv_batch(self.namespace, ops))

    async def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        """Append an entry to the log; return its sequence number (a retry with the same
        ``idempotency_key`` returns the original one and adds nothing)."""
        return await self._client._call(_api.log_append(self.namespace, data, idempotency_key=idempotency_key))

    async def read(self, after: int = 0, limit: int = 100) -> LogPage:
        """Up to ``limit`` entries with a sequence number above ``after``, oldest first."""
        return await self._client._call(_api.log_read(self.namespace, after, limit))

    async def wait(self, after: int = 0, timeout_s: float = 30.0, limit: int = 100) -> LogPage:
        """Like :meth:`read`, but wait up to ``timeout_s`` for a new entry (in long polls
        of at most :data:`~cloche.client._api.LONG_POLL_S`)."""
        deadline = time.monotonic() + timeout_s
        remaining = timeout_s
        while True:
            wait_s = min(remaining, _api.LONG_POLL_S)
            page = await self._client._call(_api.log_read(self.namespace, after, limit, wait_s=wait_s))
            if page.items or remaining <= _api.LONG_POLL_S:
                return page
            remaining = max(0.0, deadline - time.monotonic())

    async def follow(self, after: int = 0, wait_s: float = _api.LONG_POLL_S) -> AsyncIterator[LogEntry]:
        """Iterate over the entries after ``after``, then over new ones, forever."""
        while True:
            page = await self.wait(after, wait_s)
            for entry in page.items:
                yield entry
            if page.items:
                after = page.items[-1].seq

    async def trim(self, upto: int) -> int:
        """Drop every entry up to ``upto``; return the oldest sequence number kept."""
        return await self._client._call(_api.log_trim(self.namespace, upto))

    async def grant(self, sandbox_id: str) -> None:
        """Let one of your sandboxes use this namespace from inside."""
        await self._client._call(_api.grant(self.namespace, sandbox_id))

    async def revoke(self, sandbox_id: str) -> None:
        """Withdraw a :meth:`grant`."""
        await self._client._call(_api.revoke(self.namespace, sandbox_id))

    async def grants(self) -> list[str]:
        """The ids of the sandboxes granted this namespace."""
        return await self._client._call(_api.list_grants(self.namespace))
