"""The hot path of durable state, answered at the top of the middleware stack.

`GET` and `PUT /v1/state/{ns}/kv/{key}` cost several times the state operation itself
when they cross every layer (the access log's send wrapper, the drain gate, ingress host
matching, the body limit, FastAPI's routing, dependencies, Request and Response objects).
This one pure ASGI layer, installed outermost, answers them with the routes' own code
(`cloche.server.routes.state`) and keeps those layers' guarantees itself: the access log
line and the `X-Request-Id` header, the bearer key and the tenant's rate limit, errors as
`{"error": {"code", "message"}}` with `X-Cloche-Error`. Whatever it is not sure of goes
down the full stack unchanged: while draining (the drain gate's 503), a request to an
exposed port's host name (ingress), a body without Content-Length or over its limit
(BodyLimit's 413), a query string, a conditional GET with a body.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloche.config import Settings
from cloche.control.errors import ApiError, problem
from cloche.server import access
from cloche.server.auth import bearer_key, tenant_for_key
from cloche.server.errors import error_response
from cloche.server.ingress import match_host
from cloche.server.limits import body_limit
from cloche.server.routes.state import KV_TEMPLATE, condition_of, fail, get_value, not_modified, put_value
from cloche.server.shutdown import Drain
from cloche.state.engine import StateError

PREFIX = "/v1/state/"
JSON = (b"content-type", b"application/json")
OCTETS = (b"content-type", b"application/octet-stream")
WANTED = frozenset((b"authorization", b"content-length", b"transfer-encoding", b"if-match", b"if-none-match",
                    b"x-request-id", b"host"))  # fmt: skip


class KvFastPath:
    """ASGI middleware: add it to the app last (it runs first, outside the access log)."""

    def __init__(self, app: ASGIApp, settings: Settings, drain: Drain) -> None:
        self.app = app
        self.settings = settings
        self.drain = drain
        self.logged = bool(settings.access_log)
        domain = settings.ingress_domain.strip(".").lower()
        self.ingress_suffix = ("." + domain).encode() if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        method = scope.get("method")
        if (scope["type"] != "http" or method not in ("GET", "PUT") or not path.startswith(PREFIX)
                or scope.get("query_string") or self.drain.draining):  # fmt: skip
            await self.app(scope, receive, send)
            return
        ns, sep, key = path[len(PREFIX) :].partition("/kv/")
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in WANTED:
                headers.setdefault(name, value)
        length = headers.get(b"content-length", b"0" if method == "GET" else b"")
        if (not sep or not ns or "/" in ns or not key or b"transfer-encoding" in headers or not length.isdigit()
                or int(length) > body_limit(self.settings, path) or (method == "GET" and length != b"0")
                or (self.ingress_suffix and self.ingress_suffix in headers.get(b"host", b"").lower()
                    and match_host(scope, self.ingress_suffix))):  # fmt: skip
            await self.app(scope, receive, send)
            return
        await self._answer(scope, receive, send, method, ns, key, headers)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, method: str, ns: str, key: str,
                      headers: dict[bytes, bytes]) -> None:  # fmt: skip
        arrived, started = time.time(), time.perf_counter()
        rid = access.new_request_id(headers.get(b"x-request-id")) if self.logged else None
        status: int | None = None
        tenant_id: str | None = None
        try:
            try:
                c = scope["app"].state.ctx
                tenant = tenant_for_key(c, bearer_key(_text(headers.get(b"authorization"))))
                tenant_id = tenant.id
                engine = scope["app"].state.state.engine
                if method == "PUT":
                    body = await _body(receive)
                    if body is None:
                        return  # the client left
                    condition = condition_of(_text(headers.get(b"if-match")), _text(headers.get(b"if-none-match")))
                    version = await put_value(engine, tenant, ns, key, body, condition, None)
                    status = 200
                    out = b'{"version":%d}' % version
                    await _send(send, 200, [JSON, (b"etag", b'"%d"' % version)], out, rid)
                    return
                item = await get_value(engine, tenant, ns, key)
                extra = [(b"etag", b'"%d"' % item.version)]
                if item.expires_at is not None:
                    extra.append((b"x-cloche-expires-at", b"%.3f" % item.expires_at))
                if not_modified(_text(headers.get(b"if-none-match")), item.version):
                    status = 304
                    await _send(send, 304, extra, b"", rid)
                    return
                status = 200
                await _send(send, 200, [OCTETS, *extra], item.value, rid)
            except (StateError, ApiError) as e:
                if isinstance(e, StateError):
                    response = fail(e)
                else:
                    p = problem(e)
                    response = error_response(p.status, p.code, p.message, p.headers)
                status = response.status_code
                await _send(send, status, response.raw_headers, response.body, rid, sized=True)
        except Exception:
            if rid is not None:  # the 500 handler outside names the request (cloche.server.errors)
                scope[access.NOTES] = {"request_id": rid.decode()}
            status = status or 500
            raise
        finally:
            if rid is not None:
                access.write(arrived, method, KV_TEMPLATE, status, time.perf_counter() - started, tenant_id, None,
                             rid.decode())  # fmt: skip


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _body(receive: Receive) -> bytes | None:
    """The whole request body (at most its Content-Length, which the server holds it to);
    None when the client disconnected first."""
    chunks = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, status: int, headers: list[Any], body: bytes, rid: bytes | None,
                sized: bool = False) -> None:  # fmt: skip
    """One whole answer. `headers` is the answer's own list (extended here); `sized`: it
    already carries Content-Length (a Starlette response's)."""
    if not sized and status != 304:
        headers.append((b"content-length", b"%d" % len(body)))
    if rid is not None:
        headers.append((b"x-request-id", rid))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
