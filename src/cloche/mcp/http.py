"""`/mcp` on `cloche up`: the MCP server over streamable HTTP.

Each request must carry `Authorization: Bearer <key>`; the route's `CurrentTenant`
checks it like any API route (401 in the API's JSON error shape otherwise). The MCP
SDK's session manager runs stateless, so nothing ties calls together but their key:
every tool call builds an SDK client with the key of the request that carried it, and
that client talks to this same server over loopback (the address the request came in
on) while keeping the request's Host, so port URLs name the host the MCP client used.
The tools are thus the same code, with the same checks, as over stdio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from cloche.client import AsyncClient
from cloche.mcp.server import build
from cloche.server.auth import CurrentTenant

PATH = "/mcp"


class Loopback(httpx.AsyncBaseTransport):
    """Sends every request to `address` (this server's own socket), leaving the URL's
    host in the Host header as httpx set it from the client's base URL."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self.host, port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def _client_of(ctx: Context) -> AsyncIterator[AsyncClient]:
    request = ctx.request_context.request
    if not isinstance(request, Request) or request.scope.get("server") is None:
        raise ToolError("this call did not come over HTTP")
    key = request.headers.get("authorization", "").partition(" ")[2].strip()
    base = f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
    async with AsyncClient(base, key, transport=Loopback(request.scope["server"])) as client:
        yield client


def router() -> APIRouter:
    """The `/mcp` route, with a lifespan (merged into the app's by `include_router`)
    that runs its own MCP session manager, which can run once only: one per app."""
    mcp = build(_client_of)
    mcp.streamable_http_app(stateless_http=True, transport_security=TransportSecuritySettings(
        enable_dns_rebinding_protection=False))  # fmt: skip  # the key, not the Origin, guards it
    manager = mcp.session_manager

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        async with manager.run():
            yield

    class Handled(Response):
        """The response is the MCP session manager's own (JSON or an SSE stream)."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await manager.handle_request(scope, receive, send)

    mcp_router = APIRouter(lifespan=running)

    @mcp_router.api_route(PATH, methods=["GET", "POST", "DELETE"], response_class=Response, tags=["mcp"],
                          summary="MCP over streamable HTTP (Authorization: Bearer <key>)")  # fmt: skip
    async def mcp_endpoint(_: CurrentTenant) -> Response:
        """The Model Context Protocol endpoint: every tool call acts with this request's key."""
        return Handled()

    return mcp_router
