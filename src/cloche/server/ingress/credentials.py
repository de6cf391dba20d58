"""Who may reach a sandbox's port: the traffic token, a signed URL (and the cookie it
sets), the owner's API key on the path form, or nobody's credentials when public.

One place decides, and records what the rest of the proxy must strip from the request
(cloche's credentials never reach the sandbox) or add to the response (the cookie).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from starlette.requests import HTTPConnection, Request
from starlette.types import Scope

from cloche.control.errors import ApiError, not_found
from cloche.control.traffic import TrafficTokens
from cloche.server.auth import authenticate_now
from cloche.server.ingress.rejections import unauthorized
from cloche.server.ingress.targets import Target, header, secure
from cloche.store.db import Store

TOKEN_HEADERS = frozenset({b"e2b-traffic-access-token", b"x-cloche-traffic-token"})
COOKIE = b"cloche_traffic"
SIGNED_PARAM = b"cloche_token"
EXPIRES_PARAM = b"cloche_expires"


@dataclass(slots=True)
class Access:
    """What the credentials check decided to strip or add."""

    strip_authorization: bool = False  # the owner's API key, on the path form
    strip_key_param: bool = False  # ... or in ?token= (WebSockets, as server/auth.py allows)
    cookie: bytes | None = None  # Set-Cookie after a signed URL


def split_query(query: bytes, names: frozenset[bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The query without the parameters in `names`, and their (first) raw values."""
    kept, found = [], {}
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name in names:
            found.setdefault(name, value)
        else:
            kept.append(part)
    return b"&".join(kept), found


def strip_cookie(value: bytes) -> bytes:
    """A Cookie header's value without cloche's traffic cookie."""
    parts = (p.strip() for p in value.split(b";"))
    return b"; ".join(p for p in parts if p and p.partition(b"=")[0] != COOKIE)


def _has_param(query: bytes, name: bytes) -> bool:
    return bool(query) and name in split_query(query, frozenset({name}))[1]


def _cookie_values(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    values = []
    for name, value in headers:
        if name == b"cookie" and COOKIE in value:
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == COOKIE:
                    values.append(val)
    return values


def _set_cookie(scope: Scope, target: Target, expires: int, signature: bytes) -> bytes:
    path = target.prefix + "/" if target.by_path else "/"
    max_age = max(0, expires - int(time.time()))
    flag = "; Secure" if secure(scope) else ""
    value = f"{COOKIE.decode()}={expires}.{signature.decode('latin-1')}"
    return f"{value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{flag}".encode()


class Gate:
    """Checks a request's credentials for one target against the traffic tokens and,
    on the path form, the tenants' API keys."""

    def __init__(self, tokens: TrafficTokens, store: Store) -> None:
        self.tokens = tokens
        self.store = store

    def authorize(self, scope: Scope, target: Target, public: bool, signed: dict[bytes, bytes]) -> Access:
        """Raises 401 without valid credentials, 404 for another tenant's key (path form)."""
        access = Access()
        if target.by_path and self._owner_key(scope, target, access):
            return access
        if public:
            return access
        sandbox_id, port = target.sandbox_id, target.port
        for name, value in scope["headers"]:
            if name in TOKEN_HEADERS and self.tokens.check(sandbox_id, value.strip()):
                return access
        if SIGNED_PARAM in signed:
            expires, signature = signed.get(EXPIRES_PARAM, b""), signed[SIGNED_PARAM]
            if self.tokens.check_signed(sandbox_id, port, expires, signature):
                access.cookie = _set_cookie(scope, target, int(expires), signature)
                return access
        for value in _cookie_values(scope["headers"]):
            expires, _, signature = value.partition(b".")
            if self.tokens.check_signed(sandbox_id, port, expires, signature):
                return access
        raise unauthorized(target)

    def _owner_key(self, scope: Scope, target: Target, access: Access) -> bool:
        """The tenant's API key, checked by the API's own auth (and rate limit). A header
        that is no cloche key is left alone: it may be the app's own."""
        in_header = header(scope["headers"], b"authorization") is not None
        in_param = not in_header and scope["type"] == "websocket" and _has_param(scope["query_string"], b"token")
        if not in_header and not in_param:
            return False
        try:
            tenant = authenticate_now(cast(Request, HTTPConnection(scope)))
        except ApiError as exc:
            if exc.status == 401:
                return False
            raise
        row = self.store.sandbox(target.sandbox_id)
        if row is None or row.tenant_id != tenant.id:
            raise not_found("sandbox", target.sandbox_id)
        access.strip_authorization = in_header
        access.strip_key_param = not in_header
        return True
