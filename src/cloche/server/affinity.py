"""A cluster replica sends each in-sandbox E2B request to the sandbox's envd home.

Why it exists: envd processes, kernels and watchers live in the memory of one replica
(`e2b.home`), while a load balancer spreads the SDK's calls over all of them. This ASGI
middleware looks at every request that carries `E2b-Sandbox-Id` (envd's and the code
interpreter's traffic): at the home it goes on to the app; elsewhere it is relayed to the
home, streamed both ways (Connect streams, uploads and downloads are never held whole),
with the caller's own headers, so the home checks the access token as usual. A relayed
request is marked (`cloche-forwarded-by`) and a marked request is always served where it
lands: a request is forwarded at most once, so no loop can form. Embedded mode
(`cloche up`) has no homes and the middleware only passes requests on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloche.cluster.etcd import EtcdUnavailable
from cloche.cluster.session import Fenced
from cloche.e2b.errors import e2b_error
from cloche.e2b.home import Home, Homes

log = logging.getLogger(__name__)

FORWARDED = b"cloche-forwarded-by"
SANDBOX = b"e2b-sandbox-id"
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                        b"proxy-connection", b"proxy-authorization", b"proxy-authenticate"})  # fmt: skip
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0)  # a stream may stay open and silent for long


def routing(scope: Scope) -> str | None:
    """The sandbox whose home must serve this request, or None to serve it here: it is
    no in-sandbox request, or it was forwarded already (never twice)."""
    if scope["type"] != "http":
        return None
    headers = dict(scope["headers"])
    if FORWARDED in headers:
        return None
    sandbox_id = headers.get(SANDBOX, b"").decode("latin-1")
    return sandbox_id or None


class EnvdAffinity:
    """ASGI middleware: in-sandbox requests go to their sandbox's home replica."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._client: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                return await self.app(scope, receive, send)
            finally:
                if self._client is not None:
                    await self._client.close()
        homes: Homes | None = getattr(scope["app"].state, "envd_homes", None) if "app" in scope else None
        sandbox_id = routing(scope) if homes is not None else None
        if homes is None or sandbox_id is None:
            return await self.app(scope, receive, send)
        downstream = Downstream(receive, scope["headers"])
        for _ in range(3):
            try:
                home = await homes.home(sandbox_id)
            except (EtcdUnavailable, TimeoutError, Fenced) as exc:  # serve here rather than not at all
                log.warning("envd home of %s unknown (%s): serving it here", sandbox_id, exc)
                return await self.app(scope, receive, send)
            if home.mine:
                return await self.app(scope, receive, send)
            try:
                return await self._forward(scope, downstream, send, home, homes.url)
            except aiohttp.ClientConnectorError:  # the home is down: wait for its claim to lapse
                if not await homes.vacated(sandbox_id, home):
                    break
            except aiohttp.ServerDisconnectedError:  # a kept-alive connection it had closed
                if downstream.started:
                    return  # cut short: the caller sees its connection drop
        response = e2b_error(503, f"the replica serving sandbox {sandbox_id} does not answer; try again")
        await response(scope, receive, send)

    def client(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
            self._client = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, auto_decompress=False)
        return self._client

    async def _forward(self, scope: Scope, downstream: Downstream, send: Send, home: Home, me: str) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        headers.append((FORWARDED.decode(), me))
        url = home.url.rstrip("/") + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        async with self.client().request(
            scope["method"], url, headers=headers, data=downstream.body(), allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        ) as response:  # fmt: skip
            downstream.started = True
            out = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            await downstream.until_gone(_relay_body(response, send))


async def _relay_body(response: aiohttp.ClientResponse, send: Send) -> None:
    """The home's answer, chunk by chunk as it comes; a break mid-body ends it unfinished
    (the server then drops the caller's connection, which tells it the answer broke)."""
    with contextlib.suppress(aiohttp.ClientError):
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Downstream:
    """The caller's side of a forwarded request: its body as it arrives, then a watch
    for it leaving (which ends the relay, so a stream nobody reads is not kept open)."""

    def __init__(self, receive: Receive, headers: list[tuple[bytes, bytes]]) -> None:
        self.receive = receive
        length = dict(headers).get(b"content-length", b"0").strip()
        self.has_body = any(k == b"transfer-encoding" for k, _ in headers) or length not in (b"0", b"")
        self.started = False  # the body began to go, or an answer came: no retry any more
        self.read = asyncio.Event()
        self.gone = False
        if not self.has_body:
            self.read.set()

    def body(self) -> AsyncIterator[bytes] | None:
        return self._chunks() if self.has_body and not self.read.is_set() else None

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            while True:
                message: Message = await self.receive()
                if message["type"] == "http.disconnect":
                    self.gone = True
                    raise ConnectionAbortedError("the caller left mid-upload")
                if data := message.get("body", b""):
                    yield data
                if not message.get("more_body", False):
                    return
        finally:
            self.read.set()

    async def until_gone(self, relay: Coroutine[Any, Any, None]) -> None:
        """Run `relay` until it ends or the caller disconnects."""
        relaying = asyncio.ensure_future(relay)
        watching = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait((relaying, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relaying, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch(self) -> None:
        await self.read.wait()
        while not self.gone and (await self.receive())["type"] != "http.disconnect":
            pass
