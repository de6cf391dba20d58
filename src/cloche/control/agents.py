"""One-to-one agents: an app is deployed once; every (app, key) gets exactly one
instance, a sandbox of its own running the app's server, created on first invoke,
woken from pause or hibernation on the next, and restarted if it crashed.

Invocations are proxied over HTTP to the agent's unix socket at $CLOCHE_AGENT_SOCKET
(/.cloche/host/agent.sock inside; the same directory is visible to the host), so no
network is involved. Per key, invocations are delivered in arrival order, at most
`max_concurrency` at a time (1 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from cloche.control.agent_transport import agent_transport
from cloche.control.create import CreateRequest
from cloche.control.errors import ApiError, not_found
from cloche.control.sandboxes import SandboxService
from cloche.fleet import where
from cloche.node.api import ExecStream
from cloche.node.errors import InvalidState, RuntimeFailure, SandboxNotFound
from cloche.node.paths import BIN_DIR_PATH
from cloche.node.protocol import ExecRequest
from cloche.store.db import AgentRow, AppRow, Tenant
from cloche.store.engine import IntegrityError

AGENT_SOCKET_NAME, AGENT_LOG_NAME = "agent.sock", "agent.log"  # in the sandbox's /.cloche/host
AGENT_SOCKET = f"/.cloche/host/{AGENT_SOCKET_NAME}"
AGENT_LOG = f"/.cloche/host/{AGENT_LOG_NAME}"
# The agent's server runs under this lock (`cloche-init once`, supervisor/cloche-init.c):
# of two starts at the same moment (two replicas waking the agent), one runs and the other
# is told ONCE_HELD, waits for the first one's socket and starts again only if the holder
# goes without ever listening. `cloche-init stop` kills the holder, whichever replica
# started it (a redeploy, a server that stopped answering).
AGENT_LOCK = "/.cloche/host/agent.lock"
ONCE_HELD = b"cloche-init once: held"
RESTART_HELD_S = 0.1  # how often a start that found the lock held tries again
CLOCHE_INIT = f"{BIN_DIR_PATH}/cloche-init"  # the supervisor binary, in every sandbox
LOG_TAIL_BYTES = 4000
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
              "authorization", "proxy-authorization", "content-length"}  # fmt: skip
SERVER_SET = {"date", "server"}  # our own server sets these on the answer
DEFAULT_IDLE = {"pause_after_s": 60.0, "hibernate_after_s": 900.0}
T = TypeVar("T")


@dataclass
class Gate:
    """Per-key ordering: a FIFO semaphore for invocations, a lock for instance changes,
    and the arrival counter stamped on each invocation (X-Cloche-Sequence)."""

    limit: int
    slots: asyncio.Semaphore
    instance: asyncio.Lock = field(default_factory=asyncio.Lock)
    arrivals: int = 0


@dataclass
class AgentProcess:
    session: ExecStream
    reader: asyncio.Task[None]
    exit_code: int | None = None
    held: bool = False  # it did not start: another start of the agent's server holds its lock


@dataclass
class Invocation:
    """A proxied response: stream `body`; the key's slot is released when it ends."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class AgentService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self.store = sandboxes.store
        self.node = sandboxes.node
        self._gates: dict[tuple[str, str, str], Gate] = {}
        self._procs: dict[str, AgentProcess] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.on_agent_deleted: list[Callable[[Tenant, str, str, str], Any]] = []
        # Before an instance is woken (cluster mode, fleet/follow_user.py): (sandbox id,
        # the user's region or None, the app's spec); it may move the sandbox first.
        self.follow: Callable[[str, str | None, dict[str, Any]], Awaitable[object]] | None = None

    # ---- apps ------------------------------------------------------------------------

    def deploy(self, tenant: Tenant, name: str, spec: dict[str, Any]) -> AppRow:
        return self.store.put_app(tenant.id, name, spec)

    def app(self, tenant: Tenant, name: str) -> AppRow:
        row = self.store.app(tenant.id, name)
        if row is None:
            raise not_found("app", name)
        return row

    async def delete_app(self, tenant: Tenant, name: str, with_state: bool) -> None:
        self.app(tenant, name)
        for agent in self.store.agents(tenant.id, name):
            await self.delete_agent(tenant, name, agent.key, with_state)
        self.store.delete_app(tenant.id, name)

    # ---- agents ----------------------------------------------------------------------

    def agents(self, tenant: Tenant, app: str) -> list[dict[str, Any]]:
        self.app(tenant, app)
        return [self._view(a) for a in self.store.agents(tenant.id, app)]

    def agent(self, tenant: Tenant, app: str, key: str) -> dict[str, Any]:
        self.app(tenant, app)
        row = self.store.agent(tenant.id, app, key)
        if row is None:
            raise not_found("agent", key)
        return self._view(row)

    def _view(self, row: AgentRow) -> dict[str, Any]:
        try:
            rec = self.node.get(row.sandbox_id)
            state, active = rec.state, rec.last_active_at
        except SandboxNotFound:
            state, active = "deleted", None
        at = self.sandboxes.locate(row.sandbox_id)
        return {"key": row.key, "app": row.app, "sandbox_id": row.sandbox_id, "state": state, "node": at["node"],
                "region": at["region"], "home_region": at["home_region"], "app_version": row.app_version,
                "created_at": row.created_at, "last_active_at": active}  # fmt: skip

    async def delete_agent(self, tenant: Tenant, app: str, key: str, with_state: bool) -> None:
        row = self.store.agent(tenant.id, app, key)
        if row is None:
            raise not_found("agent", key)
        async with self._gate(tenant.id, app, key, 1).instance:
            await self._forget_process(row.sandbox_id)
            with contextlib.suppress(ApiError):
                await self.sandboxes.kill(tenant, row.sandbox_id)
            self.store.delete_agent(tenant.id, app, key)
        if with_state:
            for hook in self.on_agent_deleted:
                await hook(tenant, app, key, row.sandbox_id)

    # ---- invoke ----------------------------------------------------------------------

    def _gate(self, tenant_id: str, app: str, key: str, limit: int) -> Gate:
        gate = self._gates.get((tenant_id, app, key))
        if gate is None or (gate.limit != limit and not gate.instance.locked() and gate.slots._value == gate.limit):
            gate = Gate(limit, asyncio.Semaphore(limit))
            self._gates[(tenant_id, app, key)] = gate
        return gate

    async def invoke(self, tenant: Tenant, app_name: str, key: str, method: str, path: str,
                     headers: dict[str, str], body: AsyncIterator[bytes]) -> Invocation:  # fmt: skip
        app = self.app(tenant, app_name)
        _check_key(key)
        gate = self._gate(tenant.id, app_name, key, int(app.spec.get("max_concurrency") or 1))
        gate.arrivals += 1
        headers = {**headers, "x-cloche-sequence": str(gate.arrivals), "x-cloche-agent-key": key}
        await gate.slots.acquire()
        try:
            async with gate.instance:
                sandbox_id = await self._instance(tenant, app, key, where.user_region())
                await self._ensure_server(sandbox_id, app)
            response = await self._forward(sandbox_id, method, path, headers, body)
        except BaseException:
            gate.slots.release()
            raise

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                raise ApiError(502, "agent_crashed", f"agent failed while streaming its answer: {exc}") from exc
            finally:
                await response.aclose()
                gate.slots.release()

        out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | SERVER_SET}
        if "content-length" in response.headers and "content-encoding" not in response.headers:
            out["content-length"] = response.headers["content-length"]
        return Invocation(response.status_code, out, stream())

    async def relocate(self, tenant: Tenant, app: str, key: str, move: Callable[[str], Awaitable[T]]) -> T:
        """`move` the key's sandbox (by id) once the invocations of it in flight here are
        done: it takes every slot, in arrival order, so those that arrive meanwhile wait
        and then reach it where it went (its server starts there)."""
        limit = int(self.app(tenant, app).spec.get("max_concurrency") or 1)
        row = self.store.agent(tenant.id, app, key)
        if row is None:
            raise not_found("agent", key)
        gate = self._gate(tenant.id, app, key, limit)
        taken = 0
        try:
            for _ in range(gate.limit):
                await gate.slots.acquire()
                taken += 1
            async with gate.instance:
                await self._forget_process(row.sandbox_id)
                return await move(row.sandbox_id)
        finally:
            for _ in range(taken):
                gate.slots.release()

    async def _instance(self, tenant: Tenant, app: AppRow, key: str, region: str | None) -> str:
        """The key's sandbox, created or woken (after following its user's region, in a
        cluster); upgraded to the app's current version."""
        row = self.store.agent(tenant.id, app.name, key)
        if row is not None:
            try:
                if self.sandboxes.get(tenant, row.sandbox_id).record.state in ("stopped", "hibernated"):
                    await self._forget_process(row.sandbox_id)  # its server is gone with its processes
                if self.follow is not None:
                    await self.follow(row.sandbox_id, region, app.spec)
                await self.sandboxes.woken(tenant, row.sandbox_id)
            except ApiError:
                self.store.delete_agent(tenant.id, app.name, key)
                row = None
        if row is None:
            return await self._create(tenant, app, key)
        if row.app_version != app.version:
            await self._upgrade(row, app)
        return row.sandbox_id

    def _env(self, app: AppRow, key: str) -> dict[str, str]:
        return {**app.spec.get("env", {}), "CLOCHE_AGENT_SOCKET": AGENT_SOCKET, "CLOCHE_APP": app.name,
                "CLOCHE_AGENT_KEY": key}  # fmt: skip

    async def _create(self, tenant: Tenant, app: AppRow, key: str) -> str:
        spec = app.spec
        idle = spec.get("idle") or DEFAULT_IDLE
        view, _ = await self.sandboxes.create(tenant, CreateRequest(
            template=spec.get("template"), cpu=spec.get("cpu"), memory_mb=spec.get("memory_mb"),
            disk_mb=spec.get("disk_mb"), metadata={"cloche.app": app.name, "cloche.agent": key[:200]},
            env=self._env(app, key), idle=idle, regions=spec.get("regions") or (),
        ))  # fmt: skip
        sandbox_id = view.row.id
        setup = spec.get("setup")
        if setup:
            cmd = ["/bin/sh", "-c", setup] if isinstance(setup, str) else list(setup)
            result = await self.node.exec(sandbox_id, ExecRequest(cmd=cmd, timeout_s=600))
            if result.exit_code != 0:
                await self.sandboxes.kill(tenant, sandbox_id)
                output = (result.stdout + result.stderr)[-LOG_TAIL_BYTES:].decode(errors="replace")
                raise ApiError(502, "agent_setup_failed",
                               f"setup exited with {result.exit_code}; its output ends with:\n{output}")  # fmt: skip
        try:
            self.store.add_agent(AgentRow(tenant.id, app.name, key, sandbox_id, app.version, time.time()))
        except IntegrityError:
            # another server replica made this key's instance first (the gate is per process):
            # the key keeps that one, and this one goes before it ever served
            await self.sandboxes.kill(tenant, sandbox_id)
            row = self.store.agent(tenant.id, app.name, key)
            if row is None:
                raise
            return row.sandbox_id
        return sandbox_id

    async def _upgrade(self, row: AgentRow, app: AppRow) -> None:
        """Apply a redeploy to an instance that is idle (we hold its instance lock and no
        invocation is in flight): new env and command; its files are kept."""
        await self.node.set_env(row.sandbox_id, self._env(app, row.key))
        await self._stop_server(row.sandbox_id)
        self.store.set_agent_version(row.tenant_id, row.app, row.key, app.version)

    # ---- the agent's own server ------------------------------------------------------

    def log_tail(self, sandbox_id: str) -> str:
        return self.node.host_file_tail(sandbox_id, AGENT_LOG_NAME, LOG_TAIL_BYTES).decode(errors="replace")

    async def _listening(self, sandbox_id: str) -> bool:
        try:
            _, writer = await self.node.connect_host(sandbox_id, AGENT_SOCKET_NAME)
        except (OSError, RuntimeFailure):
            return False
        writer.close()
        return True

    async def _ensure_server(self, sandbox_id: str, app: AppRow) -> None:
        proc = self._procs.get(sandbox_id)
        if proc is not None and proc.exit_code is None and sandbox_id in self._clients:
            return  # started by us, alive, and answered before: skip the probe connection
        if await self._listening(sandbox_id):
            return
        # only ours: another replica's may be starting right now; a stale socket goes under the lock
        await self._stop_own(sandbox_id)
        command = list(app.spec["command"])
        proc = await self._start_server(sandbox_id, command)
        timeout = float(app.spec.get("startup_timeout_s") or 30)
        deadline = time.monotonic() + timeout
        retry_at = time.monotonic() + RESTART_HELD_S
        while not await self._listening(sandbox_id):
            if proc.exit_code is not None and not proc.held:
                raise ApiError(502, "agent_exited", f"the agent exited with {proc.exit_code} before opening "
                               f"its socket; its output ends with:\n{self.log_tail(sandbox_id)}")  # fmt: skip
            if time.monotonic() > deadline:
                await self._stop_server(sandbox_id)  # ours, or one that never listened started through another replica
                raise ApiError(504, "agent_not_ready", f"the agent did not listen on $CLOCHE_AGENT_SOCKET "
                               f"within {timeout:g} s; its output ends with:\n{self.log_tail(sandbox_id)}")  # fmt: skip
            if proc.held and time.monotonic() >= retry_at:  # its holder may have gone without listening
                proc = await self._start_server(sandbox_id, command)
                retry_at = time.monotonic() + RESTART_HELD_S
            await asyncio.sleep(0.005)

    async def _start_server(self, sandbox_id: str, command: list[str]) -> AgentProcess:
        """Start the app's command under the agent's lock, its output appended to the log."""
        wrapped = [CLOCHE_INIT, "once", AGENT_LOCK, "/bin/sh", "-c",
                   f'rm -f {AGENT_SOCKET}; exec "$@" >>{AGENT_LOG} 2>&1', "cloche-agent", *command]  # fmt: skip
        session = await self.node.open_exec(sandbox_id, ExecRequest(cmd=wrapped, detach=True))
        proc = AgentProcess(session, asyncio.create_task(asyncio.sleep(0)))
        proc.reader = asyncio.create_task(self._watch(proc))
        self._procs[sandbox_id] = proc
        return proc

    async def _watch(self, proc: AgentProcess) -> None:
        try:
            async for event in proc.session.events():
                if event.kind == "stderr" and ONCE_HELD in event.data:
                    proc.held = True
                elif event.kind == "exit":
                    proc.exit_code = event.exit_code
        except RuntimeFailure:
            proc.exit_code = -1
        finally:
            await proc.session.close()

    async def _stop_own(self, sandbox_id: str) -> None:
        """Kill the agent's server if this replica started it and it still runs."""
        proc = self._procs.pop(sandbox_id, None)
        if proc and proc.exit_code is None and proc.session.pid:
            with contextlib.suppress(RuntimeFailure, OSError):
                await self.node.signal(sandbox_id, proc.session.pid, 9)
        client = self._clients.pop(sandbox_id, None)
        if client:
            await client.aclose()

    async def _stop_server(self, sandbox_id: str) -> None:
        """Kill the agent's server whichever replica started it (a redeploy, a wedged or
        crashing agent): the holder of its lock."""
        await self._stop_own(sandbox_id)
        with contextlib.suppress(RuntimeFailure, InvalidState, SandboxNotFound, OSError):  # no server left with it
            await self.node.exec(sandbox_id, ExecRequest(cmd=[CLOCHE_INIT, "stop", AGENT_LOCK], timeout_s=10))
        # A dying server may still accept for a moment: its socket goes now, so the next
        # readiness check waits for the new server's socket.
        self.node.remove_host_file(sandbox_id, AGENT_SOCKET_NAME)

    async def _forget_process(self, sandbox_id: str) -> None:
        proc = self._procs.pop(sandbox_id, None)
        if proc:
            proc.reader.cancel()
        client = self._clients.pop(sandbox_id, None)
        if client:
            await client.aclose()

    async def _forward(self, sandbox_id: str, method: str, path: str, headers: dict[str, str],
                       body: AsyncIterator[bytes]) -> httpx.Response:  # fmt: skip
        client = self._clients.get(sandbox_id)
        if client is None:
            transport = agent_transport(lambda: self.node.connect_host(sandbox_id, AGENT_SOCKET_NAME))
            client = httpx.AsyncClient(transport=transport, base_url="http://agent", timeout=None)
            self._clients[sandbox_id] = client
        # Content-Length is kept so the body streams through unchunked: simple servers
        # (Python's http.server among them) do not read chunked request bodies.
        forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP or k.lower() == "content-length"}
        # A request without a body (no length, not chunked) goes without one: a chunked
        # terminator the agent never reads makes it reset the connection after its answer.
        has_body = any(k.lower() in ("content-length", "transfer-encoding") for k in headers)
        request = client.build_request(method, "/" + path.lstrip("/"), headers=forwarded,
                                       content=body if has_body else None)  # fmt: skip
        try:
            return await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            # Its server goes (killed if it still runs, its socket removed), so the next
            # invoke starts a new one: a crashing process can still accept for a moment.
            await self._stop_server(sandbox_id)
            raise ApiError(502, "agent_crashed", f"the agent failed to answer ({exc.__class__.__name__}); it "
                           f"will be restarted on the next invoke. Its output ends with:\n"
                           f"{self.log_tail(sandbox_id)}") from exc  # fmt: skip


def _check_key(key: str) -> None:
    if not key or len(key) > 256 or any(ord(c) < 32 or c == "/" for c in key):
        raise ApiError(400, "invalid_request", "agent key must be 1-256 printable characters, without '/'")
