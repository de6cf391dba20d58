"""Ingress to sandbox ports ("exposed ports") through cloche's own HTTP port.

A process in a sandbox that listens on 0.0.0.0:PORT is reachable from the host at the
sandbox's address (its routed veth). This module relays clients to it, in two forms:

- by host name, E2B's form: `{port}-{id}.{ingress_domain}` (`8000-sb_x.localhost:8787`);
- by path: `/v1/sandboxes/{id}/ports/{port}/{path}`.

One ASGI middleware (`Ingress`) recognises both ahead of routing: proxied bodies must
not meet the API's JSON body limit, and the work per request must stay small (the goal
is at most 0.5 ms added at p50 over talking to the sandbox directly). For the same
reason HTTP/1.1 is relayed over raw asyncio streams with a keep-alive pool per
(sandbox, address, port) instead of a general-purpose client: one request head is
written, one response head parsed, and bodies stream chunk by chunk both ways with
backpressure, never buffered whole (so server-sent events and long polls just work).
A WebSocket is relayed message by message to a WebSocket to the sandbox (the
`websockets` package), close codes included.

Access needs the sandbox's traffic token (`cloche.control.traffic`) in a header, or a
signed URL (which then sets a cookie scoped to that host or path), or nothing when the
sandbox's policy is `public`; the path form also takes the owner's API key. cloche's
credentials are stripped before anything reaches the sandbox. A sleeping sandbox is
woken first, as exec does, and traffic counts as activity for its idle policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from cloche.config import Settings
from cloche.control.errors import ApiError, not_found
from cloche.control.ports import Ports
from cloche.control.traffic import TrafficTokens
from cloche.node.errors import RuntimeFailure
from cloche.server.access import note
from cloche.server.auth import authenticate_now
from cloche.server.context import Context
from cloche.snapshots.store import SnapshotCorrupt

TOKEN_HEADERS = frozenset({b"e2b-traffic-access-token", b"x-cloche-traffic-token"})
COOKIE = b"cloche_traffic"
SIGNED_PARAM = b"cloche_token"
EXPIRES_PARAM = b"cloche_expires"
PATH_PREFIX = b"/v1/sandboxes/"
PATH_TEMPLATE = "/v1/sandboxes/{sandbox_id}/ports/{port}/{path}"  # as the access log names them
HOST_TEMPLATE = "{port}-{sandbox_id}.{ingress_domain}/{path}"
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"proxy-authenticate", b"proxy-authorization"})  # fmt: skip
# never forwarded: cloche's credentials, the framing we redo, the headers we set ourselves
REQUEST_DROP = HOP_BY_HOP | TOKEN_HEADERS | {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-host",
                                             b"x-forwarded-proto", b"x-forwarded-prefix"}  # fmt: skip
WEBSOCKET_DROP = REQUEST_DROP | {b"content-length", b"sec-websocket-key", b"sec-websocket-version",
                                 b"sec-websocket-extensions", b"sec-websocket-protocol",
                                 b"sec-websocket-accept"}  # fmt: skip
RESPONSE_DROP = HOP_BY_HOP | {b"date"}  # the server adds its own Date
CHUNK = 1 << 16
HEAD_LIMIT = 1 << 18  # request and response heads, and chunk-size lines
WEBSOCKET_MAX_MESSAGE = 16 << 20  # as uvicorn's own limit on the client side
CONNECT_TIMEOUT_S = 10.0
WAKE_WAIT_S = 10.0  # after a wake, how long a refused connect is retried (its server is starting)
WATCH_AFTER_S = 1.0  # a bodyless exchange open this long starts watching for the client leaving
TOUCH_EVERY_S = 1.0
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)
RELAY_ERRORS = (OSError, EOFError, ValueError, asyncio.LimitOverrunError)  # IncompleteReadError is an EOFError


@dataclass(slots=True)
class Target:
    sandbox_id: str
    port: int  # 0 when malformed or out of range (answered 400)
    path: bytes  # the request path inside the sandbox, raw as sent
    by_path: bool  # the /v1/sandboxes/{id}/ports/{port}/ form, else by host name

    @property
    def prefix(self) -> str:
        return f"/v1/sandboxes/{self.sandbox_id}/ports/{self.port}"


@dataclass(slots=True)
class Access:
    """What the credentials check decided to strip or add."""

    strip_authorization: bool = False  # the owner's API key, on the path form
    strip_key_param: bool = False  # ... or in ?token= (WebSockets, as server/auth.py allows)
    cookie: bytes | None = None  # Set-Cookie after a signed URL


# ---- recognising ingress requests ------------------------------------------------------


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5:
        return 0
    port = int(text)
    return port if 1 <= port <= 65535 else 0


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _raw_path(scope: Scope) -> bytes:
    return scope.get("raw_path") or quote(scope["path"]).encode()


def match_host(scope: Scope, suffix: bytes) -> Target | None:
    """`{port}-{id}.{domain}[:port]` -> the target; any other host -> None."""
    host = _header(scope["headers"], b"host")
    if not host:
        return None
    name = host.rsplit(b":", 1)[0].lower() if host[-1:] != b"]" else host
    if not name.endswith(suffix):
        return None
    port, dash, sandbox_id = name[: -len(suffix)].partition(b"-")
    if not dash or not port.isdigit() or not sandbox_id or b"." in sandbox_id:
        return None
    return Target(sandbox_id.decode("latin-1"), _port(port), _raw_path(scope), False)


def match_path(scope: Scope) -> Target | None:
    """`/v1/sandboxes/{id}/ports/{port}[/path]` -> the target (path "/" when absent)."""
    raw = _raw_path(scope)
    if not raw.startswith(PATH_PREFIX):
        return None
    sandbox_id, _, rest = raw[len(PATH_PREFIX) :].partition(b"/")
    if not sandbox_id or not rest.startswith(b"ports/"):
        return None
    port, _, tail = rest[len(b"ports/") :].partition(b"/")
    if not port:
        return None
    return Target(sandbox_id.decode("latin-1"), _port(port), b"/" + tail, True)


class Ingress:
    """ASGI middleware: ingress requests (either form) are proxied, the rest go on to the app.
    Add it last, so that it runs first."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        domain = settings.ingress_domain.strip(".").lower()
        self.suffix = ("." + domain).encode() if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            target = (match_host(scope, self.suffix) if self.suffix else None) or match_path(scope)
            if target is not None:
                template = PATH_TEMPLATE if target.by_path else HOST_TEMPLATE
                note(scope, path=template, sandbox_id=target.sandbox_id)
                await proxy_of(scope["app"]).serve(scope, receive, send, target)
                return
        await self.app(scope, receive, send)


def proxy_of(app: Any) -> Proxy:
    """The app's proxy (made on first use, once the app's context exists)."""
    state = app.state
    proxy: Proxy | None = getattr(state, "ingress", None)
    if proxy is None or proxy.ctx is not state.ctx:
        proxy = state.ingress = Proxy(state.ctx)
    return proxy


def tokens_of(app: Any) -> TrafficTokens:
    return proxy_of(app).tokens


# ---- credentials -------------------------------------------------------------------------


def _split_query(query: bytes, names: frozenset[bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The query without the parameters in `names`, and their (first) raw values."""
    kept, found = [], {}
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name in names:
            found.setdefault(name, value)
        else:
            kept.append(part)
    return b"&".join(kept), found


def _cookie_values(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    values = []
    for name, value in headers:
        if name == b"cookie" and COOKIE in value:
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == COOKIE:
                    values.append(val)
    return values


def _strip_cookie(value: bytes) -> bytes:
    parts = (p.strip() for p in value.split(b";"))
    return b"; ".join(p for p in parts if p and p.partition(b"=")[0] != COOKIE)


def _secure(scope: Scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def _set_cookie(scope: Scope, target: Target, expires: int, signature: bytes) -> bytes:
    path = target.prefix + "/" if target.by_path else "/"
    max_age = max(0, expires - int(time.time()))
    secure = "; Secure" if _secure(scope) else ""
    value = f"{COOKIE.decode()}={expires}.{signature.decode('latin-1')}"
    return f"{value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}".encode()


def _unauthorized(target: Target) -> ApiError:
    also = ", or the owner's API key (Authorization: Bearer)" if target.by_path else ""
    return ApiError(401, "unauthorized", f"port {target.port} of sandbox {target.sandbox_id} needs its traffic token "
                                         f"(header e2b-traffic-access-token or X-Cloche-Traffic-Token), "
                                         f"a signed URL{also}")  # fmt: skip


# ---- errors --------------------------------------------------------------------------------


async def _reject(scope: Scope, send: Send, exc: Exception) -> None:
    """Answer with the app's own handler for `exc` (the API's JSON error bodies)."""
    handlers = getattr(scope["app"], "exception_handlers", {})
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    response: Response = await handler(HTTPConnection(scope), exc)
    await _send_response(scope, send, response)


async def _send_response(scope: Scope, send: Send, response: Response) -> None:
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        return

    async def no_receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)


def _port_closed(target: Target) -> ApiError:
    message = f"nothing listens on port {target.port} in sandbox {target.sandbox_id} (listen on 0.0.0.0)"
    return ApiError(502, "port_closed", message)


def _connect_error(target: Target, exc: BaseException) -> ApiError:
    if isinstance(exc, ConnectionRefusedError):
        return _port_closed(target)
    return ApiError(502, "bad_gateway", f"port {target.port} of sandbox {target.sandbox_id} cannot be reached: "
                                        f"{exc.__class__.__name__}: {exc}")  # fmt: skip


def _no_answer(target: Target) -> ApiError:
    return ApiError(502, "bad_gateway", f"port {target.port} of sandbox {target.sandbox_id} "
                                        "closed the connection without a valid HTTP answer")  # fmt: skip


# ---- the proxy -------------------------------------------------------------------------


class Activity:
    """Touches the sandbox (postponing its idle policy) at most once a second."""

    __slots__ = ("ctx", "sandbox_id", "last")

    def __init__(self, ctx: Context, sandbox_id: str) -> None:
        self.ctx = ctx
        self.sandbox_id = sandbox_id
        self.last = time.monotonic()

    def seen(self) -> None:
        now = time.monotonic()
        if now - self.last >= TOUCH_EVERY_S:
            self.last = now
            with contextlib.suppress(RuntimeFailure):
                self.ctx.ports.touch(self.sandbox_id)


class Proxy:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tokens = TrafficTokens(ctx.settings.data_dir / "traffic-key")
        self.pool = Pool()

    async def serve(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        websocket = scope["type"] == "websocket"
        if websocket and (await receive())["type"] != "websocket.connect":
            return
        query, signed = scope["query_string"], {}
        if SIGNED_PARAM in query:
            query, signed = _split_query(query, frozenset({SIGNED_PARAM, EXPIRES_PARAM}))
        try:
            if not target.port:
                raise ApiError(400, "invalid_request", "the port must be a number from 1 to 65535")
            policy = self.ctx.ports.record(target.sandbox_id).spec.network
            access = self.authorize(scope, target, policy.public, signed)
            address, woke = await self.ctx.ports.reach(target.sandbox_id)
        except (ApiError, RuntimeFailure, SnapshotCorrupt) as exc:
            await _reject(scope, send, exc)
            return
        if access.strip_key_param:
            query = _split_query(query, frozenset({b"token"}))[0]
        path = target.path + b"?" + query if query else target.path
        mask = policy.mask_request_host
        host = mask.replace("${PORT}", str(target.port)).encode() if mask else _header(scope["headers"], b"host")
        headers = upstream_headers(scope, target, access, host, WEBSOCKET_DROP if websocket else REQUEST_DROP)
        activity = Activity(self.ctx, target.sandbox_id)
        if websocket:
            upstream = Upstream(target, address, woke, activity, target.port in policy.https_ports)
            await upstream.relay_websocket(scope, receive, send, path, host, headers, access.cookie)
        else:
            await self.forward(scope, receive, send, target, address, woke, path, headers, access.cookie, activity,
                               policy.https_ports)

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
        raise _unauthorized(target)

    def _owner_key(self, scope: Scope, target: Target, access: Access) -> bool:
        """The tenant's API key, checked by the API's own auth (and rate limit). A header
        that is no cloche key is left alone: it may be the app's own."""
        in_header = _header(scope["headers"], b"authorization") is not None
        in_param = not in_header and scope["type"] == "websocket" and _has_param(scope["query_string"], b"token")
        if not in_header and not in_param:
            return False
        try:
            tenant = authenticate_now(cast(Request, HTTPConnection(scope)))
        except ApiError as exc:
            if exc.status == 401:
                return False
            raise
        row = self.ctx.store.sandbox(target.sandbox_id)
        if row is None or row.tenant_id != tenant.id:
            raise not_found("sandbox", target.sandbox_id)
        access.strip_authorization = in_header
        access.strip_key_param = not in_header
        return True

    async def forward(self, scope: Scope, receive: Receive, send: Send, target: Target, address: str, woke: bool,
                      path: bytes, headers: list[tuple[bytes, bytes]], cookie: bytes | None,
                      activity: Activity, https_ports: tuple[int, ...]) -> None:  # fmt: skip
        """One HTTP request to the sandbox and its response back, both streamed."""
        body = _body_mode(scope["headers"])
        if body == CHUNKED:
            headers = [h for h in headers if h[0] != b"content-length"]
            headers.append((b"transfer-encoding", b"chunked"))
        head = _head(scope["method"], path, headers)
        key = (target.sandbox_id, address, target.port, target.port in https_ports)
        for attempt in (0, 1):
            try:
                conn, reused = await self._connect(key, woke, fresh=attempt > 0)
            except (OSError, TimeoutError, RuntimeFailure) as exc:  # RuntimeFailure: its link went meanwhile
                await _reject(scope, send, _connect_error(target, exc))
                return
            exchange = Exchange(conn, receive, body)
            exchange.start(head)
            try:
                response = await _read_head(conn.reader)
                break
            except RELAY_ERRORS as exc:
                exchange.finish()
                conn.close()
                if reused and body == NO_BODY and attempt == 0 and _nothing_read(exc):
                    continue  # a kept-alive connection the server had closed: once more on a new one
                await _reject(scope, send, _no_answer(target))
                return
        reusable = False
        try:
            reusable = await _relay_response(send, exchange, response, scope["method"], cookie, activity)
        except RELAY_ERRORS:
            pass  # cut short: returning without the last body message makes the server drop the client
        finally:
            exchange.finish()
            if reusable and exchange.body_sent:
                self.pool.give(key, conn)
            else:
                conn.close()

    async def _connect(self, key: PoolKey, woke: bool, fresh: bool) -> tuple[Connection, bool]:
        conn = None if fresh else self.pool.take(key)
        if conn is not None:
            return conn, True
        sandbox_id, _, port, tls = key
        return await _retry_refused(woke, lambda: _open(self.ctx.ports, sandbox_id, port, tls)), False


def _has_param(query: bytes, name: bytes) -> bool:
    return bool(query) and name in _split_query(query, frozenset({name}))[1]


def _nothing_read(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, ConnectionError)


async def _retry_refused(woke: bool, opener: Any) -> Any:
    """Right after a wake the sandbox's server may still be starting: retry refusals a while."""
    deadline = time.monotonic() + (WAKE_WAIT_S if woke else 0.0)
    delay = 0.01
    while True:
        try:
            return await opener()
        except ConnectionRefusedError:
            if time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


def upstream_headers(scope: Scope, target: Target, access: Access, host: bytes | None,
                     drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """The client's headers minus hop-by-hop ones and cloche's credentials, plus Host
    and X-Forwarded-* (ours replace any the client sent)."""
    headers = scope["headers"]
    listed = _connection_tokens(headers)
    out = [(b"host", host)] if host else []
    original_host = None
    for name, value in headers:
        if name in drop or name in listed:
            if name == b"host":
                original_host = value
            continue
        if name == b"authorization" and access.strip_authorization:
            continue
        if name == b"cookie" and COOKIE in value:
            value = _strip_cookie(value)
            if not value:
                continue
        out.append((name, value))
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode()))
    out.append((b"x-forwarded-proto", b"https" if _secure(scope) else b"http"))
    if original_host:
        out.append((b"x-forwarded-host", original_host))
    if target.by_path:
        out.append((b"x-forwarded-prefix", target.prefix.encode()))
    return out


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection (hop-by-hop by declaration), and `close`."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def _body_mode(headers: list[tuple[bytes, bytes]]) -> int:
    mode = NO_BODY
    for name, value in headers:
        if name == b"transfer-encoding":
            return CHUNKED
        if name == b"content-length" and value.strip() not in (b"0", b""):
            mode = LENGTH
    return mode


def _head(method: str, path: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [method.encode(), b" ", path, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


# ---- upstream connections -------------------------------------------------------------


class Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, idle_s: float) -> bool:
        """Open, not idle too long, and nothing unasked-for waiting (a server that sent
        more than it framed must not answer the next client's request with it)."""
        stray = getattr(self.reader, "_buffer", b"")  # StreamReader has no public peek
        fresh = now - self.idle_since < idle_s
        return fresh and not stray and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.transport.abort()


def _sandbox_tls() -> ssl.SSLContext:
    """TLS to a sandbox's own HTTPS server (E2B's `https_ports`): encrypted on the hop,
    not verified, since the server's certificate is the sandbox's own, often self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


SANDBOX_TLS = _sandbox_tls()
# (sandbox id, address, port, over TLS): the idle connections that may serve a request
# (the address tells a sandbox's new link, after a wake, from its old one)
PoolKey = tuple[str, str, int, bool]


async def _open(ports: Ports, sandbox_id: str, port: int, tls: bool) -> Connection:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        reader, writer = await ports.connect(sandbox_id, port, HEAD_LIMIT)
        if tls:
            await writer.start_tls(SANDBOX_TLS)
    return Connection(reader, writer)


class Pool:
    """Idle keep-alive connections per (sandbox, address, port): the newest is reused
    first, and stale ones (closed by the server, idle too long) are dropped on the way."""

    def __init__(self, per_key: int = 32, idle_s: float = 30.0) -> None:
        self.per_key = per_key
        self.idle_s = idle_s
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._swept = time.monotonic()

    def take(self, key: PoolKey) -> Connection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.usable(now, self.idle_s):
                return conn
            conn.close()
        return None

    def give(self, key: PoolKey, conn: Connection) -> None:
        now = conn.idle_since = time.monotonic()
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.per_key:
            conn.close()
        else:
            conns.append(conn)
        if now - self._swept > self.idle_s:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key, conns in list(self._idle.items()):
            keep = []
            for conn in conns:
                if conn.usable(now, self.idle_s):
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class Exchange:
    """One request and its response over one upstream connection. The request body is
    uploaded by a task that then watches for the client leaving; a bodyless exchange
    that lasts starts such a watcher late, so quick requests create no task at all."""

    def __init__(self, conn: Connection, receive: Receive, body: int) -> None:
        self.conn = conn
        self.receive = receive
        self.body = body
        self.body_sent = body == NO_BODY
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def start(self, head: bytes) -> None:
        self.conn.writer.write(head)
        if self.body != NO_BODY:
            self.task = asyncio.create_task(self._upload())
        else:
            self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._watch_late)

    def _watch_late(self) -> None:
        self.timer = None
        if not self.finished:
            self.task = asyncio.create_task(self._watch())

    async def _upload(self) -> None:
        writer, chunked = self.conn.writer, self.body == CHUNKED
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    self._client_left()
                    return
                data = message.get("body", b"")
                if data:
                    writer.writelines((b"%x\r\n" % len(data), data, b"\r\n") if chunked else (data,))
                    await writer.drain()
                if not message.get("more_body", False):
                    break
            if chunked:
                writer.write(b"0\r\n\r\n")
            self.body_sent = True
        except OSError:
            self.conn.close()  # the sandbox stopped reading: its answer (if any) still comes back
            return
        await self._watch()

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self._client_left()

    def _client_left(self) -> None:
        if not self.finished:
            self.conn.close()  # the relay's reads end; nobody is left to answer

    def finish(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """The response's version, status and headers (names lowercased); 1xx are skipped."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        status = int(rest[:3])
        if not 100 <= status <= 999 or status == 101:
            raise ValueError(f"unexpected status {status}")
        if status < 200:
            continue
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t"):
                raise ValueError(f"malformed header line {line[:80]!r}")
            headers.append((name.lower(), value.strip()))
        return version, status, headers


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """How the response body is delimited: (mode, content length)."""
    if method == "HEAD" or status in (204, 304):
        return NO_BODY, 0
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return (CHUNKED if value.lower().endswith(b"chunked") else UNTIL_CLOSE), 0
        if name == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative content-length")
    return (UNTIL_CLOSE, 0) if length is None else (LENGTH, length)


async def _relay_response(send: Send, exchange: Exchange, response: tuple[bytes, int, list[tuple[bytes, bytes]]],
                          method: str, cookie: bytes | None, activity: Activity) -> bool:  # fmt: skip
    """Stream the response to the client; True when the connection may be kept alive."""
    version, status, headers = response
    mode, length = _framing(method, status, headers)
    listed = _connection_tokens(headers)
    out = [(n, v) for n, v in headers if n not in RESPONSE_DROP and n not in listed
           and (n != b"content-length" or mode in (LENGTH, NO_BODY))]  # fmt: skip
    if cookie:
        out.append((b"set-cookie", cookie))
    await send({"type": "http.response.start", "status": status, "headers": out})
    reader = exchange.conn.reader
    if mode == LENGTH:
        await _length_body(reader, send, exchange, length, activity)
    elif mode == CHUNKED:
        await _chunked_body(reader, send, exchange, activity)
    else:
        if mode == UNTIL_CLOSE:
            while data := await reader.read(CHUNK):
                await send({"type": "http.response.body", "body": data, "more_body": True})
                activity.seen()
        exchange.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    return mode != UNTIL_CLOSE and version == b"HTTP/1.1" and b"close" not in listed


async def _length_body(reader: asyncio.StreamReader, send: Send, exchange: Exchange, left: int,
                       activity: Activity) -> None:  # fmt: skip
    if not left:
        exchange.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    while left:
        data = await reader.read(min(left, CHUNK))
        if not data:
            raise EOFError("the sandbox closed the connection mid-body")
        left -= len(data)
        if not left:
            exchange.finish()
        await send({"type": "http.response.body", "body": data, "more_body": left > 0})
        activity.seen()


async def _chunked_body(reader: asyncio.StreamReader, send: Send, exchange: Exchange, activity: Activity) -> None:
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16):
        while size > 0:
            data = await reader.read(min(size, CHUNK))
            if not data:
                raise EOFError("the sandbox closed the connection mid-chunk")
            size -= len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
            activity.seen()
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("malformed chunk")
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailers are dropped (ASGI responses have none here)
    exchange.finish()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---- WebSockets --------------------------------------------------------------------------


def _close_code(code: int | None, abnormal: int) -> int:
    """A close code that may be sent on (1005, 1006 and 1015 may not)."""
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code
    return abnormal if code == 1006 else 1000


class Upstream:
    """A WebSocket to the sandbox, relayed message by message to the client's."""

    def __init__(self, target: Target, address: str, woke: bool, activity: Activity, tls: bool) -> None:
        self.target = target
        self.address = address
        self.woke = woke
        self.activity = activity
        self.tls = tls

    def _uri(self, host: bytes | None, path: bytes) -> str:
        """The URI sets the Host header the sandbox sees; the socket goes to its address."""
        scheme = "wss" if self.tls else "ws"
        fallback = f"{scheme}://{self.address}:{self.target.port}{path.decode('latin-1')}"
        if not host:
            return fallback
        uri = f"{scheme}://{host.decode('latin-1')}{path.decode('latin-1')}"
        try:
            parse_uri(uri)
        except InvalidURI:
            return fallback
        return uri

    async def _connect(self, uri: str, scope: Scope, headers: list[tuple[bytes, bytes]]) -> ClientConnection:
        extra = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n != b"host"]
        return await connect(uri, host=self.address, port=self.target.port, additional_headers=extra,
                             ssl=SANDBOX_TLS if self.tls else None,
                             user_agent_header=None, subprotocols=scope.get("subprotocols") or None,
                             compression=None, proxy=None, open_timeout=CONNECT_TIMEOUT_S, ping_interval=None,
                             max_size=WEBSOCKET_MAX_MESSAGE, close_timeout=5)  # fmt: skip

    async def relay_websocket(self, scope: Scope, receive: Receive, send: Send, path: bytes, host: bytes | None,
                              headers: list[tuple[bytes, bytes]], cookie: bytes | None) -> None:  # fmt: skip
        uri = self._uri(host, path)
        try:
            upstream = await _retry_refused(self.woke, lambda: self._connect(uri, scope, headers))
        except InvalidStatus as exc:
            await _deny_with(scope, send, exc.response.status_code, exc.response.headers.raw_items(),
                             exc.response.body or b"")  # fmt: skip
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await _reject(scope, send, _connect_error(self.target, exc))
            return
        accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": upstream.subprotocol}
        if cookie:
            accept["headers"] = [(b"set-cookie", cookie)]
        await send(accept)
        await self._relay(receive, send, upstream)

    async def _relay(self, receive: Receive, send: Send, upstream: ClientConnection) -> None:
        inbound = asyncio.create_task(self._client_to_upstream(receive, upstream))
        outbound = asyncio.create_task(self._upstream_to_client(send, upstream))
        try:
            done, _ = await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
            if inbound in done and not inbound.exception() and inbound.result() is False:
                await outbound  # the sandbox closed first: its close code goes to the client
        finally:
            for task in (inbound, outbound):
                task.cancel()
            await asyncio.gather(inbound, outbound, return_exceptions=True)
            await upstream.close()

    async def _client_to_upstream(self, receive: Receive, upstream: ClientConnection) -> bool:
        """Until the client leaves (True) or the sandbox's side closes (False)."""
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    await upstream.send(text if text is not None else message.get("bytes") or b"")
                    self.activity.seen()
                elif message["type"] == "websocket.disconnect":
                    await upstream.close(_close_code(message.get("code"), 1001), message.get("reason") or "")
                    return True
        except ConnectionClosed:
            return False

    async def _upstream_to_client(self, send: Send, upstream: ClientConnection) -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
                self.activity.seen()
        except ConnectionClosed:
            pass
        code = _close_code(upstream.close_code, 1011)
        with contextlib.suppress(Exception):  # the client may be gone already
            await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})


async def _deny_with(scope: Scope, send: Send, status: int, headers: Any, body: bytes) -> None:
    """Refuse the client's WebSocket with the sandbox's own HTTP answer."""
    kept = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers
            if n.lower().encode("latin-1") not in RESPONSE_DROP | {b"content-length"}]  # fmt: skip
    kept.append((b"content-length", str(len(body)).encode()))
    response = Response(body, status)
    response.raw_headers = kept
    await _send_response(scope, send, response)
