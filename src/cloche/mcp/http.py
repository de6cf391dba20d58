"""`/mcp` on `cloche up`: the MCP server over streamable HTTP.

Each request must carry `Authorization: Bearer <key>`; the route's `CurrentTenant`
checks it like any API route (401 in the API's JSON error shape otherwise). The MCP
SDK's session manager runs stateless, so nothing ties calls together but their key:
every tool call builds an SDK client with the key of the request that carried it, and
that client talks to this same server over loopback (the address the request came in
on) while keeping the request's Host, so port URLs name the host the MCP client used.
The tools are thus the same code, with the same checks, as over stdio.

The MCP SDK is loaded on the first `/mcp` request, not when the server starts: its
imports and tool schemas cost ~0.4 s of CPU, a sixth of a cold `cloche up`, that most
servers never need.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from cloche.client import AsyncClient
from cloche.server.auth import CurrentTenant
from cloche.tlsdefault import default_tls

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

PATH = "/mcp"
log = logging.getLogger(__name__)


class Loopback(httpx.AsyncBaseTransport):
    """Sends every request to `address` (this server's own socket), leaving the URL's
    host in the Host header as httpx set it from the client's base URL."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        self.inner = httpx.AsyncHTTPTransport(verify=default_tls())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self.host, port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def _client_of(ctx: Context) -> AsyncIterator[AsyncClient]:
    request = ctx.request_context.request
    if not isinstance(request, Request) or request.scope.get("server") is None:
        from mcp.server.mcpserver.exceptions import ToolError

        raise ToolError("this call did not come over HTTP")
    key = request.headers.get("authorization", "").partition(" ")[2].strip()
    base = f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
    async with AsyncClient(base, key, transport=Loopback(request.scope["server"])) as client:
        yield client


class _LazyManager:
    """The MCP session manager, built on first use. It runs in a task of its own until
    shutdown, because anyio wants the task group it opens left by the task that entered it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._manager: Any = None

    async def get(self) -> Any:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mcp-session-manager")
        await self._ready.wait()
        if self._manager is None:
            raise RuntimeError("the MCP server failed to start (see the server log)")
        return self._manager

    async def _run(self) -> None:
        try:
            # the imports run off the event loop, so other requests go on meanwhile
            server = await asyncio.to_thread(importlib.import_module, "cloche.mcp.server")
            security = await asyncio.to_thread(importlib.import_module, "mcp.server.transport_security")
            mcp = server.build(_client_of)
            mcp.streamable_http_app(stateless_http=True, transport_security=security.TransportSecuritySettings(
                enable_dns_rebinding_protection=False))  # fmt: skip  # the key, not the Origin, guards it
            async with mcp.session_manager.run():
                self._manager = mcp.session_manager
                self._ready.set()
                await self._stop.wait()
        except Exception:
            log.exception("the MCP server failed to start")
        finally:
            self._ready.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def router() -> APIRouter:
    """The `/mcp` route, with a lifespan (merged into the app's by `include_router`) that
    stops its MCP session manager, if one was started: one per app."""
    lazy = _LazyManager()

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await lazy.stop()

    class Handled(Response):
        """The response is the MCP session manager's own (JSON or an SSE stream)."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await (await lazy.get()).handle_request(scope, receive, send)

    mcp_router = APIRouter(lifespan=running)

    # POST only: a stateless server has no session for a GET stream to deliver anything
    # to (the SDK would hold it open, empty, until the client gives up), nor one to DELETE;
    # the MCP spec has such a server answer both with 405
    @mcp_router.api_route(PATH, methods=["POST"], response_class=Response, tags=["mcp"],
                          summary="MCP over streamable HTTP (Authorization: Bearer <key>)")  # fmt: skip
    async def mcp_endpoint(_: CurrentTenant) -> Response:
        """The Model Context Protocol endpoint: every tool call acts with this request's key."""
        return Handled()

    return mcp_router
