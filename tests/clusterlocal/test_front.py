"""The front gives two replicas one address: it spreads new connections over both, and
when one is down every connection still reaches the live one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cloche.cluster.local.front import Front


def replica(name: str) -> ThreadingHTTPServer:
    """A loopback HTTP server that answers every GET with its name and the request body size."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            size = len(self.rfile.read(int(self.headers["Content-Length"])))
            body = f"{name} {size}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def replicas() -> Iterator[list[ThreadingHTTPServer]]:
    servers = [replica("a"), replica("b")]
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


async def answers(port: int, n: int) -> list[str]:
    """n GETs, each on a new connection, through the front."""
    out = []
    for _ in range(n):
        async with httpx.AsyncClient(timeout=5) as http:
            out.append((await http.get(f"http://127.0.0.1:{port}/")).text)
    return out


async def with_front(replicas: list[ThreadingHTTPServer], scenario) -> None:  # type: ignore[no-untyped-def]
    front = Front([("127.0.0.1", s.server_address[1]) for s in replicas])
    await front.start("127.0.0.1", 0)
    try:
        await scenario(front.port)
    finally:
        await front.close()


def test_connections_are_spread_over_both_replicas(replicas: list[ThreadingHTTPServer]) -> None:
    async def scenario(port: int) -> None:
        seen = await answers(port, 10)
        assert sorted(set(seen)) == ["a", "b"]
        assert abs(seen.count("a") - seen.count("b")) <= 1
        async with httpx.AsyncClient(timeout=5) as http:  # a large body survives both ways
            response = await http.post(f"http://127.0.0.1:{port}/", content=b"x" * 3_000_000)
        assert response.text.split(" ")[1] == "3000000"

    asyncio.run(with_front(replicas, scenario))


def test_a_dead_replica_is_skipped(replicas: list[ThreadingHTTPServer]) -> None:
    replicas[0].shutdown()
    replicas[0].server_close()  # its port now refuses

    async def scenario(port: int) -> None:
        assert await answers(port, 6) == ["b"] * 6

    asyncio.run(with_front(replicas, scenario))


def test_with_every_replica_dead_the_connection_is_closed(replicas: list[ThreadingHTTPServer]) -> None:
    for s in replicas:
        s.shutdown()
        s.server_close()

    async def scenario(port: int) -> None:
        with pytest.raises(httpx.TransportError):
            await answers(port, 1)

    asyncio.run(with_front(replicas, scenario))


def test_closing_with_a_connection_open_ends_it_quietly(replicas: list[ThreadingHTTPServer]) -> None:
    errors: list[dict[str, object]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        front = Front([("127.0.0.1", s.server_address[1]) for s in replicas])
        await front.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(b"GET / HTTP/1.1\r\n")  # a request the replica still waits the end of
        await asyncio.sleep(0.2)
        await front.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the front ended the connection
        writer.close()
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert errors == []
