"""Who is looking at the dashboard: server-side sessions, CSRF and Origin checks, tenant scope.

Why server-side sessions: the cookie carries only a random id (HttpOnly, SameSite=Strict,
Path=/ui), so neither a script in the page nor a copied cookie jar reveals the API key, and
signing out (or restarting the server) ends the session for good. The key stays in server
memory so that every request goes through the API's own lookup (`tenant_for_key`): a revoked
key ends its sessions at once, and the tenant's rate limit covers the dashboard too.

Why both CSRF checks: SameSite=Strict already keeps the cookie off cross-site requests; the
per-session token (header `X-CSRF-Token`, which htmx sends on every request, or the form
field `csrf`) and the Origin check are the second and third locks on every state change.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from cloche.control.errors import ApiError, not_found
from cloche.server.auth import tenant_for_key
from cloche.server.context import Context
from cloche.store.db import Tenant

COOKIE = "cloche_ui"
LOGIN_COOKIE = "cloche_ui_login"  # double-submit token of the sign-in form (there is no session yet)
CSRF_HEADER = "x-csrf-token"
IDLE_S = 8 * 3600
MAX_SESSIONS = 10_000


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in form (see render.UiRoute)."""


@dataclass
class Session:
    key: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Open sessions by id, in memory: a restart signs everyone out."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self, key: str) -> tuple[str, Session]:
        self._expire()
        if len(self._by_id) >= MAX_SESSIONS:  # drop the least recently used
            del self._by_id[min(self._by_id, key=lambda sid: self._by_id[sid].last_seen)]
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = session = Session(key)
        return sid, session

    def get(self, sid: str) -> Session | None:
        session = self._by_id.get(sid)
        if session is None or time.monotonic() - session.last_seen > IDLE_S:
            self._by_id.pop(sid, None)
            return None
        session.last_seen = time.monotonic()
        return session

    def close(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._by_id.items() if now - v.last_seen > IDLE_S]:
            del self._by_id[sid]


@dataclass
class Viewer:
    """The signed-in tenant. An admin sees every tenant; anyone else only their own."""

    c: Context
    tenant: Tenant
    session: Session

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def tenants(self) -> list[Tenant]:
        return self.c.store.tenants() if self.tenant.is_admin else [self.tenant]

    def scope(self, tenant_id: str | None) -> Tenant:
        """The tenant a page or action is about: the viewer's own unless an admin names another."""
        if tenant_id is None or tenant_id == self.tenant.id:
            return self.tenant
        other = self.c.store.tenant(tenant_id) if self.tenant.is_admin else None
        if other is None:
            raise not_found("tenant", tenant_id)
        return other

    def owner(self, sandbox_id: str) -> Tenant:
        """Whom to ask the sandbox service as: for an admin the sandbox's owner, for anyone
        else themselves (so another tenant's sandbox is answered 404 by the service)."""
        row = self.c.store.sandbox(sandbox_id) if self.tenant.is_admin else None
        return self.scope(row.tenant_id) if row is not None else self.tenant


def sessions(conn: HTTPConnection) -> Sessions:
    return conn.app.state.ui_sessions


def resolve(conn: HTTPConnection) -> Viewer:
    """The viewer behind the session cookie (HTTP request or WebSocket), or LoginRequired."""
    sid = conn.cookies.get(COOKIE, "")
    session = sessions(conn).get(sid)
    if session is None:
        raise LoginRequired
    c: Context = conn.app.state.ctx
    try:
        tenant = tenant_for_key(c, session.key)
    except ApiError as exc:
        if exc.status == 401:  # the key was revoked
            sessions(conn).close(sid)
            raise LoginRequired from None
        raise
    return Viewer(c, tenant, session)


def same_origin(conn: HTTPConnection) -> bool:
    """The request's Origin names this very host (what a browser sends on every POST and
    WebSocket handshake); anything else, or none, is refused."""
    origin, host = conn.headers.get("origin"), conn.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host


def tokens_match(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


async def viewer(request: Request) -> Viewer:
    request.state.viewer = v = resolve(request)  # error pages keep the navigation (render.UiRoute)
    return v


async def checked(request: Request, v: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """A state-changing request: same Origin and the session's CSRF token, else 403."""
    if not same_origin(request):
        raise ApiError(403, "forbidden", "cross-origin request refused")
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):  # fmt: skip
        token = (await request.form()).get("csrf")  # type: ignore[assignment]
    if not tokens_match(token, v.csrf):
        raise ApiError(403, "forbidden", "missing or wrong CSRF token")
    return v


Page = Annotated[Viewer, Depends(viewer)]
Action = Annotated[Viewer, Depends(checked)]
