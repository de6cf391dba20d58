"""Asyncio streams over the proxy's sockets, opened and closed the same way everywhere.

The proxy accepts raw sockets (so that it can peek at them) and turns them into streams
only once it knows what to do with a connection: plain for a splice or an HTTP relay,
TLS server side (with a certificate of the node's CA) for an intercepted HTTPS one.
Closing is graceful when a connection ends normally and an abort when it is cancelled
(the proxy closing), so no socket outlives the task that served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

READ_SIZE = 65536
HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0


def no_delay(sock: socket.socket | None) -> None:
    """Send small writes at once (no Nagle). asyncio does it only for sockets whose
    `proto` says TCP, which an accepted socket of `socket.socket()` does not; waiting
    for the peer's delayed ACK would add ~40 ms to every relayed response."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def accept_streams(sock: socket.socket, context: ssl.SSLContext | None = None) -> Streams:
    """Streams over an accepted socket; with `context`, after a server-side TLS handshake."""
    loop = asyncio.get_running_loop()
    no_delay(sock)
    reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if context else None
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def close_streams(*writers: asyncio.StreamWriter | None) -> None:
    """Close each writer, waiting a bounded time for buffered data to leave; abort them
    when that time is up or the caller is cancelled."""
    open_writers = [w for w in writers if w is not None]
    for writer in open_writers:
        writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            for writer in open_writers:
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        abort(*open_writers)
    except asyncio.CancelledError:
        abort(*open_writers)
        raise


def abort(*writers: asyncio.StreamWriter | None) -> None:
    """Drop the connections at once (no flush, no TLS close_notify)."""
    for writer in writers:
        if writer is not None:
            writer.transport.abort()


async def finish(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and wait until they are done, their exceptions read (and dropped)."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()
