"""The delay between the regions of `cloche cluster local --regions`: a transparent TCP
relay on the host. netem is not in every kernel (not in this one), so the wire between
regions is this process instead: nftables redirects every connection from one region's
namespace to another region's address here (netns.py), the relay reads the address the
connection was meant for (SO_ORIGINAL_DST), connects to it, and forwards each chunk, in
order, once the one-way delay has passed since it arrived. A request and its answer
thus take twice the delay more than they would on the wire: the round trip between
regions.

Run as `python -m cloche.cluster.local.relay --listen 127.0.0.1:0 --delay-ms 40 --port-file F`:
it writes the port it listens on to F once it does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import time
from pathlib import Path

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: the destination before a DNAT
CHUNK = 65536


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was headed (a sockaddr_in: family, port, address)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk (and the end) delivered `delay_s` after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + delay_s, data))
        finally:
            queue.put_nowait((time.monotonic() + delay_s, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await reading


class DelayRelay:
    """Accepts redirected connections and joins each to its original destination."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._accept, host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = original_destination(writer.get_extra_info("socket"))
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.transport.abort()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer, self.delay_s), _pipe(up_reader, writer, self.delay_s))
        except OSError:
            pass  # one side reset: the other goes too
        finally:
            up_writer.transport.abort()
            writer.transport.abort()


async def _main(host: str, port: int, delay_s: float, port_file: Path) -> None:
    server = await DelayRelay(delay_s).serve(host, port)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port once listening")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(_main(host, int(port), args.delay_ms / 1000, args.port_file))


if __name__ == "__main__":
    main()
