"""`cloche mcp`: the MCP server on stdin/stdout, for MCP clients that launch it.

Every call uses one SDK client: the server from `CLOCHE_URL` (or `--url`), the key from
`CLOCHE_API_KEY` (or `--api-key`). Stdout carries the protocol only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import Context

from cloche.client import AsyncClient
from cloche.mcp.server import build


async def serve(url: str | None, api_key: str | None) -> None:
    """Serve MCP on stdio until the client closes stdin."""
    async with AsyncClient(url, api_key) as client:

        @asynccontextmanager
        async def the_client(_: Context) -> AsyncIterator[AsyncClient]:
            yield client

        await build(the_client).run_stdio_async()
