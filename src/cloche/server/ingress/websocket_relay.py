"""A client's WebSocket relayed message by message to a WebSocket to the sandbox.

Uses the `websockets` package on the sandbox's side. Close codes travel both ways (the
ones that may not be sent are replaced), and a handshake the sandbox refuses is
answered to the client with the sandbox's own HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from cloche.server.ingress.activity import Activity
from cloche.server.ingress.headers import RESPONSE_DROP
from cloche.server.ingress.rejections import connect_error, reject, send_response
from cloche.server.ingress.targets import Target
from cloche.server.ingress.upstream import CONNECT_TIMEOUT_S, retry_refused, sandbox_tls

WEBSOCKET_MAX_MESSAGE = 16 << 20  # as uvicorn's own limit on the client side


def _close_code(code: int | None, abnormal: int) -> int:
    """A close code that may be sent on (1005, 1006 and 1015 may not)."""
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code
    return abnormal if code == 1006 else 1000


class WebSocketRelay:
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
                             ssl=sandbox_tls() if self.tls else None,
                             user_agent_header=None, subprotocols=scope.get("subprotocols") or None,
                             compression=None, proxy=None, open_timeout=CONNECT_TIMEOUT_S, ping_interval=None,
                             max_size=WEBSOCKET_MAX_MESSAGE, close_timeout=5)  # fmt: skip

    async def relay(self, scope: Scope, receive: Receive, send: Send, path: bytes, host: bytes | None,
                    headers: list[tuple[bytes, bytes]], cookie: bytes | None) -> None:  # fmt: skip
        uri = self._uri(host, path)
        try:
            upstream = await retry_refused(self.woke, lambda: self._connect(uri, scope, headers))
        except InvalidStatus as exc:
            await _deny_with(scope, send, exc.response.status_code, exc.response.headers.raw_items(),
                             exc.response.body or b"")  # fmt: skip
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await reject(scope, send, connect_error(self.target, exc))
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
    await send_response(scope, send, response)
