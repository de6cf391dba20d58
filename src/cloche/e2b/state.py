"""Per-server E2B state (token store, running processes, kernels, watchers) and the
routing of in-sandbox requests: the sandbox comes from the `E2b-Sandbox-Id` header, the
service from `E2b-Sandbox-Port`, and the caller must present the sandbox's access token
(`X-Access-Token`; the code interpreter's port also takes `E2B-Traffic-Access-Token`;
file URLs may carry a signature instead)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from cloche.control.errors import ApiError
from cloche.control.traffic import TrafficTokens
from cloche.e2b.errors import E2bError, gone
from cloche.e2b.interpreter import KernelRegistry
from cloche.e2b.procs import ProcessRegistry
from cloche.e2b.store import E2bRow, E2bStore
from cloche.e2b.users import USER, User, resolve
from cloche.e2b.watch import WatcherRegistry
from cloche.node.api import Node, SandboxFiles
from cloche.node.errors import FileError, RuntimeFailure
from cloche.node.records import SandboxRecord
from cloche.server.context import Context, ctx

if TYPE_CHECKING:  # a cluster's (server/cluster_backend.py makes them): not loaded by `cloche up`
    from cloche.e2b.home import Homes

ENVD_PORT = 49983
JUPYTER_PORT = 49999


class E2bState:
    """What the E2B layer keeps per server, hung off the app (`app.state.e2b`)."""

    def __init__(self, c: Context, homes: Homes | None = None) -> None:
        self.c = c
        self.homes = homes  # cluster mode: which replica serves each sandbox's envd calls
        self.store = E2bStore(c.store)
        self.traffic = TrafficTokens(c.settings.data_dir / "traffic-key")  # E2B's token is cloche's
        self.processes = ProcessRegistry()
        self.kernels = KernelRegistry()
        self.watchers = WatcherRegistry()
        self.prepared: set[str] = set()
        self.last_sweep = 0.0  # when rows of sandboxes gone behind E2B's back were last dropped
        c.sandboxes.subscribe(self)

    async def sandbox_started(self, record: SandboxRecord) -> None:
        pass

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        """Processes, kernels and watchers of a sandbox end with it."""
        self.prepared.discard(sandbox_id)
        self.watchers.drop(sandbox_id)
        self.kernels.drop(sandbox_id)
        self.processes.drop(sandbox_id)
        if self.homes is not None:
            await self.homes.release(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone for good."""
        self.store.delete(sandbox_id)
        self.kernels.forget(sandbox_id)
        self.prepared.discard(sandbox_id)


def e2b_state(request: Request) -> E2bState:
    app = request.app
    st = getattr(app.state, "e2b", None)
    if st is None or st.c is not ctx(request):
        st = app.state.e2b = E2bState(ctx(request), getattr(app.state, "envd_homes", None))
    return st


@dataclass
class Target:
    """The sandbox an in-sandbox request is for, checked and running."""

    c: Context
    st: E2bState
    row: E2bRow
    sandbox_id: str
    files_cache: list[SandboxFiles] = field(default_factory=list)

    @property
    def node(self) -> Node:
        """The node the sandbox runs on, as control holds it (the only way E2B reaches it)."""
        return self.c.sandboxes.node

    def files(self) -> SandboxFiles:
        if not self.files_cache:
            self.files_cache.append(self.node.files(self.sandbox_id))
        return self.files_cache[0]

    async def user(self, name: str) -> User:
        """The sandbox's user `name` (E2bError 400 when it has no such user)."""
        user = await resolve(name, self.files())
        if user is None:
            raise E2bError(400, f"user {name!r} does not exist in the sandbox")
        return user


def _signature_ok(request: Request, row: E2bRow, operation: str) -> bool:
    signature = request.query_params.get("signature")
    if not signature:
        return False
    path = request.query_params.get("path", "")
    user = request.query_params.get("username", "")
    expiration = request.query_params.get("signature_expiration")
    raw = f"{path}:{operation}:{user}:{row.access_token}"
    if expiration:
        if not expiration.isdigit() or int(expiration) < time.time():
            return False
        raw += f":{expiration}"
    digest = base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(signature, f"v1_{digest}")


def _token_ok(request: Request, row: E2bRow, port: int, operation: str | None) -> bool:
    token = request.headers.get("x-access-token")
    if token and hmac.compare_digest(token, row.access_token):
        return True
    traffic = request.headers.get("e2b-traffic-access-token")
    if port == JUPYTER_PORT and traffic and hmac.compare_digest(traffic, row.traffic_token):
        return True
    return operation is not None and _signature_ok(request, row, operation)


async def target(request: Request, port: int = ENVD_PORT, operation: str | None = None,
                 wake: bool = True) -> Target:  # fmt: skip
    """Check an in-sandbox request and make sure its sandbox runs (a hibernated or paused
    sandbox is woken, as cloche's own API does)."""
    st = e2b_state(request)
    c = st.c
    sandbox_id = request.headers.get("e2b-sandbox-id", "")
    if not sandbox_id:
        raise E2bError(400, "missing E2b-Sandbox-Id header (set E2B_SANDBOX_URL to this server's URL)")
    asked_port = request.headers.get("e2b-sandbox-port", "")
    if asked_port and asked_port != str(port):
        raise E2bError(502, f"The sandbox {sandbox_id} is running but port {asked_port} is not open "
                             "(cloche serves envd on 49983 and the code interpreter on 49999)")  # fmt: skip
    row = st.store.get(sandbox_id)
    if row is None:
        raise gone(sandbox_id)
    if not _token_ok(request, row, port, operation):
        raise E2bError(401, "invalid or missing access token for this sandbox (X-Access-Token)")
    owner = c.store.sandbox(sandbox_id)
    tenant = c.store.tenant(row.tenant_id)
    if owner is None or tenant is None or owner.tenant_id != row.tenant_id:
        st.forget(sandbox_id)
        raise gone(sandbox_id)
    try:
        c.limiter.check(tenant.id)
        if wake:
            await c.sandboxes.woken(tenant, sandbox_id)
        elif (state := (await c.sandboxes.node.current(sandbox_id)).state) != "running":  # not a lagging copy
            raise gone(sandbox_id, f"it is {state}")
    except ApiError as exc:  # rate limited, or the sandbox went away meanwhile (404)
        raise gone(sandbox_id) if exc.status == 404 else E2bError(exc.status, exc.message) from None
    except RuntimeFailure as exc:  # it could not be woken: to E2B's proxy, it is not there
        raise gone(sandbox_id, str(exc)) from None
    t = Target(c, st, row, sandbox_id)
    if sandbox_id not in st.prepared:
        await prepare_home(t.files())
        st.prepared.add(sandbox_id)
    return t


async def prepare_home(files: SandboxFiles) -> None:
    """E2B's default user works in /home/user, which it owns."""
    try:
        if await files.is_dir(USER.home):
            return
    except FileError:
        pass
    await files.mkdir("/home")
    await files.mkdir_as(USER.home, USER.uid, USER.gid)
