"""HTTP/1.1 relayed to a sandbox's port over raw asyncio streams.

A general-purpose client would cost more than the proxy's budget (at most 0.5 ms added
at p50), so this writes one request head, parses one response head, and streams bodies
chunk by chunk both ways with backpressure, never buffered whole (server-sent events
and long polls just work). A kept-alive connection the server had closed is retried
once on a new one; the connection goes back to the pool only when the exchange ended
cleanly.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from cloche.control.ports import Ports
from cloche.node.errors import RuntimeFailure
from cloche.server.ingress.activity import Activity
from cloche.server.ingress.headers import RESPONSE_DROP, connection_tokens
from cloche.server.ingress.rejections import connect_error, no_answer, reject
from cloche.server.ingress.targets import Target
from cloche.server.ingress.upstream import Connection, Pool, PoolKey, open_connection, retry_refused

CHUNK = 1 << 16
WATCH_AFTER_S = 1.0  # a bodyless exchange open this long starts watching for the client leaving
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)
RELAY_ERRORS = (OSError, EOFError, ValueError, asyncio.LimitOverrunError)  # IncompleteReadError is an EOFError
Head = tuple[bytes, int, list[tuple[bytes, bytes]]]  # version, status, headers


class HttpRelay:
    """Forwards one HTTP request at a time, reusing pooled connections."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.pool = Pool()

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
                await reject(scope, send, connect_error(target, exc))
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
                await reject(scope, send, no_answer(target))
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
        return await retry_refused(woke, lambda: open_connection(self.ports, sandbox_id, port, tls)), False


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


def _nothing_read(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, ConnectionError)


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


async def _read_head(reader: asyncio.StreamReader) -> Head:
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


async def _relay_response(send: Send, exchange: Exchange, response: Head, method: str, cookie: bytes | None,
                          activity: Activity) -> bool:  # fmt: skip
    """Stream the response to the client; True when the connection may be kept alive."""
    version, status, headers = response
    mode, length = _framing(method, status, headers)
    listed = connection_tokens(headers)
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
