"""Connections to a sandbox's port: opening them (over TLS for the sandbox's HTTPS
ports, retrying refusals while a just-woken sandbox's server starts) and keeping the
idle ones for the next request.

Kept-alive raw asyncio streams per (sandbox, address, port) are what keeps the proxy's
added latency small; the pool also makes sure a connection is reused only when it is
clean (nothing unasked-for buffered, not closed by the server, not idle too long).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cloche.control.ports import Ports

HEAD_LIMIT = 1 << 18  # request and response heads, and chunk-size lines
CONNECT_TIMEOUT_S = 10.0
WAKE_WAIT_S = 10.0  # after a wake, how long a refused connect is retried (its server is starting)
# (sandbox id, address, port, over TLS): the idle connections that may serve a request
# (the address tells a sandbox's new link, after a wake, from its old one)
PoolKey = tuple[str, str, int, bool]
T = TypeVar("T")


@functools.cache
def sandbox_tls() -> ssl.SSLContext:
    """TLS to a sandbox's own HTTPS server (E2B's `https_ports`): encrypted on the hop,
    not verified, since the server's certificate is the sandbox's own, often self-signed.
    Made on first use, and without loading a trust store it would never consult."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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


async def open_connection(ports: Ports, sandbox_id: str, port: int, tls: bool) -> Connection:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        reader, writer = await ports.connect(sandbox_id, port, HEAD_LIMIT)
        if tls:
            await writer.start_tls(sandbox_tls())
    return Connection(reader, writer)


async def retry_refused(woke: bool, opener: Callable[[], Awaitable[T]]) -> T:
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
