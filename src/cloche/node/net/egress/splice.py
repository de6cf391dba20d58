"""A byte pipe between the sandbox and its upstream, for connections the proxy leaves alone.

Most intercepted connections are not rewritten (a host without transforms, a name the
sandbox did not resolve to that address, any port when only SOCKS tunnelling applies):
their bytes are copied both ways untouched. Each direction ends on its own (the end of
one side's stream is passed on as a half-close, so request/response protocols that
close their sending side still get their answer), writes wait for the other side to
drain (a slow reader slows the sender instead of filling memory), and an error on
either side closes both.
"""

from __future__ import annotations

import asyncio

from cloche.node.net.egress.streams import READ_SIZE, Streams, abort, finish


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def splice(a: Streams, b: Streams) -> None:
    """Copy bytes between `a` and `b` until both directions ended; on an error in either,
    both connections are aborted. The caller still closes both writers."""
    (a_reader, a_writer), (b_reader, b_writer) = a, b
    forward = asyncio.ensure_future(_pipe(a_reader, b_writer))
    backward = asyncio.ensure_future(_pipe(b_reader, a_writer))
    try:
        await asyncio.gather(forward, backward)
    except OSError:
        abort(a_writer, b_writer)
    finally:
        await finish(forward, backward)
