"""The replica's async HTTP client for one node's API, on aiohttp.

Why aiohttp and not httpx (which the SDK and the sync reads use): every exec, wake and
file call a replica routes to a node pays this client once, and with httpx.AsyncClient
the client was most of that hop. BENCHMARKS.md "Cluster mode" (bench/cluster_bench.py)
has the hop: `RemoteNode.exec` against `NodeRuntime.exec` in the same run, +2.54 ms
added with httpx, +0.72 ms with aiohttp.

`request` reads a whole answer into a `Reply` (the shape `remote_streams.answer` reads,
as it reads an httpx response); `stream` hands out a response to read in chunks. A
connection that fails or breaks is `NodeUnreachable`, as with the other clients.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from cloche.node.errors import NodeUnreachable

# Hibernating a big sandbox takes a while: no total limit, a generous one per read.
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=600.0)
BROKEN = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


@dataclass(frozen=True)
class Reply:
    """A node's whole answer."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class NodeHttp:
    """Keep-alive HTTPS connections to one node, made on first use (in the caller's loop)."""

    def __init__(self, url: str, context: ssl.SSLContext, headers: Mapping[str, str]) -> None:
        self.url = url
        self._context = context
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._context, limit=64, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(self.url, connector=connector, headers=self._headers,
                                                  timeout=TIMEOUT, skip_auto_headers=("User-Agent",))  # fmt: skip
        return self._session

    async def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                      content: AsyncIterable[bytes] | None = None) -> Reply:  # fmt: skip
        """Send one request and read its whole answer."""
        try:
            async with self._open().request(method, path, json=json, params=_query(params), data=content) as r:
                return Reply(r.status, r.headers, await r.read())
        except BROKEN as exc:
            raise NodeUnreachable(f"node {self.url} unreachable: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, params: Mapping[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response whose body the caller reads (`content.iter_chunked`)."""
        try:
            response = await self._open().request(method, path, params=_query(params))
        except BROKEN as exc:
            raise NodeUnreachable(f"node {self.url} unreachable: {exc!r}") from exc
        async with response:
            yield response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query values as text (aiohttp takes only strings and numbers)."""
    return {k: str(v) for k, v in params.items()} if params else None
