"""The egress proxy with real servers on loopback: secrets injected, everything else untouched.

An origin (HTTP/1.1 on h11, plain or TLS with a trustme test CA) records every request it
gets; the proxy under test is given an `original_dst` that maps each accepted connection
to that origin (what nftables' redirect would have preserved), an in-test `lookup` and
`secrets`, and a direct dialler. Clients are raw asyncio streams speaking h11, trusting
only the CA that the case is about. Run alone (no netlab needed):

    .venv/bin/pytest --noconftest tests/unit/test_egress_proxy.py
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
import trustme
import uvloop

from cloche.node.net.egress.ca import NodeCA
from cloche.node.net.egress.context import ConnectionContext, SecretDenied
from cloche.node.net.egress.peek import Incomplete, host_of, peek_sni, sni_of
from cloche.node.net.egress.proxy import EgressProxyServer
from cloche.node.net.rules import EgressProxy, Transform

LOCAL = "127.0.0.1"
SECRET = "s3cr3t-value"
API = "api.example.com"  # transforms, resolved
PLAIN = "plain.example.com"  # no transforms
UNRESOLVED = "unresolved.example.com"  # transforms, but the sandbox never resolved it
DENIED = "denied.example.com"  # transforms naming a secret it may not use
TRANSFORMS = {
    API: (Transform((("Authorization", "Bearer ${secret:API_KEY}"),)), Transform((("X-Team", "blue"),))),
    UNRESOLVED: (Transform((("Authorization", "Bearer ${secret:API_KEY}"),)),),
    DENIED: (Transform((("Authorization", "Bearer ${secret:OTHER}"),)),),
}
RESOLVED = {API, PLAIN, DENIED}
NAMES = [API, PLAIN, UNRESOLVED, DENIED]
MB = 1 << 20


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # what uvicorn, hence the node, runs on
}
loop_factory = LOOPS["asyncio"]


@pytest.fixture(params=list(LOOPS), autouse=True)
def each_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    global loop_factory
    loop_factory = LOOPS[request.param]
    yield
    loop_factory = LOOPS["asyncio"]


def run(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(bounded())


# ---- origin ---------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    connection: int

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclass
class Origin:
    """An HTTP/1.1 server: `/echo` streams the request body back as it arrives,
    `/bytes/N` streams N bytes, `/hang` never answers (until the client leaves),
    `/close-after` closes the connection after its answer, anything else answers JSON."""

    tls: ssl.SSLContext | None = None
    requests: list[Seen] = field(default_factory=list)
    sent: int = 0  # body bytes written by /bytes so far
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _open: dict[asyncio.Task[Any], asyncio.StreamWriter] = field(default_factory=dict)

    async def __aenter__(self) -> Origin:
        self._server = await asyncio.start_server(self._handle, LOCAL, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in self._open.values():
            writer.transport.abort()  # each handler then ends on its own (no cancelled task)
        if self._open:
            await asyncio.wait(self._open)
        await self._server.wait_closed()

    def connections(self) -> int:
        return len(self._open)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        conn, cid = h11.Connection(h11.SERVER), next(self._ids)

        async def event() -> Any:
            while (ev := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            return ev

        async def send(*events: h11.Event) -> None:
            for ev in events:
                writer.write(conn.send(ev) or b"")
            await writer.drain()

        try:
            while isinstance(request := await event(), h11.Request):
                target = request.target.decode()
                self.requests.append(Seen(request.method.decode(), target,
                                          [(n.decode(), v.decode()) for n, v in request.headers], cid))  # fmt: skip
                if target == "/hang":
                    await reader.read()  # until the peer goes away
                elif target == "/echo":
                    await send(h11.Response(status_code=200, headers=[]))
                    while isinstance(ev := await event(), h11.Data):
                        await send(h11.Data(data=ev.data))
                    await send(h11.EndOfMessage())
                elif target.startswith("/bytes/"):
                    while not isinstance(await event(), h11.EndOfMessage):
                        pass
                    size = int(target.rsplit("/", 1)[1])
                    await send(h11.Response(status_code=200, headers=[("content-length", str(size))]))
                    chunk = b"x" * 65536
                    while self.sent < size:
                        piece = chunk[: size - self.sent]
                        self.sent += len(piece)
                        await send(h11.Data(data=piece))
                    await send(h11.EndOfMessage())
                else:
                    size = 0
                    while isinstance(ev := await event(), h11.Data):
                        size += len(ev.data)
                    body = json.dumps({"body_len": size, "connection": cid}).encode()
                    await send(h11.Response(status_code=200, headers=[("content-length", str(len(body)))]),
                               h11.Data(data=body), h11.EndOfMessage())  # fmt: skip
                if target == "/close-after" or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break  # (/close-after: closing a kept-alive connection without saying so)
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, ssl.SSLError):
            pass
        finally:
            del self._open[task]
            writer.transport.abort()


# ---- client ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte_at: float = 0.0  # loop time of the first response body byte
    sent_all_at: float = 0.0  # loop time the request body was fully sent

    def error(self) -> dict[str, str]:
        return json.loads(self.body)["error"]


class Client:
    """One connection to the proxy (TLS with `sni`, trusting only `trust`), HTTP/1.1 over h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, sni: str | None = None, trust: bytes | None = None) -> Client:
        context = None
        if sni is not None:
            context = ssl.create_default_context(cadata=(trust or b"").decode())
            context.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection(LOCAL, port, ssl=context, server_hostname=sni)
        return cls(reader, writer)

    def issuer(self) -> str:
        cert = self.writer.get_extra_info("peercert")
        return dict(x[0] for x in cert["issuer"]).get("organizationName") or dict(x[0] for x in cert["issuer"])[
            "commonName"]  # fmt: skip

    async def request(self, host: str, target: str = "/", method: str = "GET",
                      headers: list[tuple[str, str]] | None = None,
                      body: Callable[[], AsyncIterator[bytes]] | None = None) -> Reply:  # fmt: skip
        loop = asyncio.get_running_loop()
        head = [("host", host), *(headers or [])] + ([("transfer-encoding", "chunked")] if body else [])
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=head)) or b"")
        reply = Reply(0, {}, b"")

        async def upload() -> None:
            if body is not None:
                async for chunk in body():
                    self.writer.write(self.conn.send(h11.Data(data=chunk)) or b"")
                    await self.writer.drain()
            self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
            await self.writer.drain()
            reply.sent_all_at = loop.time()

        sending = asyncio.ensure_future(upload())
        data = bytearray()
        try:
            while True:
                ev = self.conn.next_event()
                if ev is h11.NEED_DATA:
                    self.conn.receive_data(await self.reader.read(65536))
                elif isinstance(ev, h11.Response):
                    reply.status, reply.headers = ev.status_code, {n.decode(): v.decode() for n, v in ev.headers}
                elif isinstance(ev, h11.Data):
                    reply.first_byte_at = reply.first_byte_at or loop.time()
                    data += ev.data
                elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            if reply.status >= 400 and not sending.done():
                sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sending
        reply.body = bytes(data)
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return reply

    async def close(self) -> None:
        self.writer.transport.abort()


# ---- the proxy under test --------------------------------------------------------------


@dataclass
class World:
    ca: NodeCA
    upstream_ca: trustme.CA
    upstream_cafile: str
    secret_calls: list[tuple[str, str, str]] = field(default_factory=list)
    unknown_source: bool = False
    socks: EgressProxy | None = None
    dialled: list[tuple[str, int, EgressProxy | None]] = field(default_factory=list)

    def lookup(self, source: str) -> ConnectionContext | None:
        if self.unknown_source:
            return None
        return ConnectionContext(sandbox_id="sb-1", transforms_for=lambda host: TRANSFORMS.get(host, ()),
                                 resolved=lambda host, ip: host in RESOLVED and ip == LOCAL,
                                 socks=self.socks)  # fmt: skip

    def secrets(self, sandbox_id: str, name: str, host: str) -> str:
        self.secret_calls.append((sandbox_id, name, host))
        if name == "API_KEY" and host in (API, UNRESOLVED):
            return SECRET
        raise SecretDenied(f"secret {name} may not be sent to {host}")

    def origin_tls(self, *names: str, ca: trustme.CA | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (ca or self.upstream_ca).issue_cert(*names).configure_cert(context)
        return context

    @asynccontextmanager
    async def proxy(self, origin_port: int, *, tls: bool | None) -> AsyncIterator[EgressProxyServer]:
        """The proxy, with the origin's port as an HTTPS port, an HTTP one or (None) neither."""

        async def dial(ip: str, port: int, socks: object) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            self.dialled.append((ip, port, socks))  # (a SOCKS5 dialler would use `socks`)
            return await asyncio.open_connection(ip, port)

        server = EgressProxyServer(ca=self.ca, lookup=self.lookup, secrets=self.secrets, dial=dial,
                                   upstream_cafile=self.upstream_cafile, host=LOCAL,
                                   http_ports=(origin_port,) if tls is False else (),
                                   https_ports=(origin_port,) if tls else (),
                                   original_dst=lambda sock: (LOCAL, origin_port))  # fmt: skip
        await server.start()
        try:
            yield server
        finally:
            await server.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory: Path = tmp_path_factory.mktemp("egress")
    upstream_ca = trustme.CA(organization_name="upstream test CA")
    cafile = directory / "upstream-ca.pem"
    cafile.write_bytes(upstream_ca.cert_pem.bytes())
    return World(NodeCA.load_or_create(directory / "ca", "cloche test node"), upstream_ca, str(cafile))


# ---- the node CA ------------------------------------------------------------------------


def test_node_ca_is_created_once_with_a_private_key(tmp_path: Path) -> None:
    ca = NodeCA.load_or_create(tmp_path / "ca", "node-a")
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert NodeCA.load_or_create(tmp_path / "ca", "node-a").cert_pem == ca.cert_pem
    context = ca.server_context(API)
    assert ca.server_context(API) is context  # cached
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


# ---- peeking --------------------------------------------------------------------------


def client_hello(name: str | None) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_parser() -> None:
    hello = client_hello(API)
    assert sni_of(hello) == API
    assert sni_of(client_hello(None)) is None
    for cut in (0, 3, 5, 40, len(hello) - 1):
        with pytest.raises(Incomplete):
            sni_of(hello[:cut])
    body = hello[5:]  # the same handshake message split over two records
    split = hello[:3] + len(body[:100]).to_bytes(2, "big") + body[:100] + hello[:3] + \
        len(body[100:]).to_bytes(2, "big") + body[100:]  # fmt: skip
    assert sni_of(split) == API
    assert sni_of(b"GET / HTTP/1.1\r\n\r\n") is None
    assert sni_of(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # a ServerHello


def test_host_parser() -> None:
    assert host_of(b"GET / HTTP/1.1\r\nHost: API.Example.com:8080\r\nX: y\r\n\r\n") == API
    assert host_of(b"GET / HTTP/1.1\r\nX: y\r\n\r\n") is None
    assert host_of(b"\x16\x03\x01\x02\x00\x01") is None
    with pytest.raises(Incomplete):
        host_of(b"GET / HTTP/1.1\r\nHost: a")


def test_peek_waits_for_a_split_client_hello_and_consumes_nothing() -> None:
    async def body() -> None:
        hello = client_hello(API)
        server, client = socket.socketpair()
        with server, client:
            server.setblocking(False)
            client.send(hello[:7])
            peek = asyncio.ensure_future(peek_sni(server, timeout=5))
            await asyncio.sleep(0.1)
            assert not peek.done()
            client.send(hello[7:])
            assert await peek == API
            assert server.recv(len(hello) + 10) == hello

    run(body())


# ---- interception ------------------------------------------------------------------------


def test_http_header_injected_and_the_sandboxs_own_replaced(world: World) -> None:
    async def body() -> None:
        async with Origin() as origin, world.proxy(origin.port, tls=False) as proxy:
            client = await Client.open(proxy.port)
            reply = await client.request(API, "/x", headers=[("Authorization", "Bearer fake"), ("X-Keep", "1")])
            await client.close()
            assert reply.status == 200
            (seen,) = origin.requests
            assert seen.header("authorization") == [f"Bearer {SECRET}"]
            assert seen.header("x-team") == ["blue"] and seen.header("x-keep") == ["1"]
            assert world.secret_calls[-1] == ("sb-1", "API_KEY", API)
            assert proxy.metrics()["requests_transformed"] == 1
            assert proxy.metrics()["connections_intercepted"] == 1

    run(body())


def test_https_injected_on_a_kept_alive_connection_with_our_certificate(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            assert client.issuer() == "cloche test node"
            loop = asyncio.get_running_loop()
            times = []
            for i in range(5):
                t0 = loop.time()
                reply = await client.request(API, f"/r{i}", method="POST", headers=[("authorization", "x")],
                                             body=lambda: _chunks(1000, 10))  # fmt: skip
                times.append(loop.time() - t0)
                assert reply.status == 200 and json.loads(reply.body)["body_len"] == 10_000
            assert sorted(times)[2] < 0.02  # no Nagle / delayed-ACK stall (~40 ms) on relayed requests
            await client.close()
            assert [s.target for s in origin.requests] == [f"/r{i}" for i in range(5)]
            assert {s.connection for s in origin.requests} == {origin.requests[0].connection}
            assert all(s.header("authorization") == [f"Bearer {SECRET}"] for s in origin.requests)
            assert proxy.metrics()["requests_transformed"] == 5

    run(body())


async def _chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield bytes([i % 251]) * size


def test_upstream_closing_between_requests_is_reconnected(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            for _ in range(3):
                assert (await client.request(API, "/close-after")).status == 200
                await asyncio.sleep(0.01)  # (the race of a request crossing the close is retried too)
            assert (await client.request(API, "/close-after")).status == 200
            await client.close()
            assert len({s.connection for s in origin.requests}) == 4
            assert proxy.metrics()["connections_intercepted"] == 1

    run(body())


def test_large_bodies_stream_both_ways(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            sent = hashlib.sha256()

            async def upload() -> AsyncIterator[bytes]:
                async for chunk in _chunks(64 * 1024, 320):  # 20 MiB
                    sent.update(chunk)
                    yield chunk

            reply = await client.request(API, "/echo", method="PUT", body=upload)
            assert reply.status == 200 and len(reply.body) == 20 * MB
            assert hashlib.sha256(reply.body).digest() == sent.digest()
            assert reply.first_byte_at < reply.sent_all_at  # echoed while still uploading: streamed
            reply = await client.request(API, f"/bytes/{20 * MB}")
            assert reply.status == 200 and reply.body == b"x" * (20 * MB)
            await client.close()

    run(body())


def test_a_slow_reader_holds_the_upstream_back(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            client.writer.write(client.conn.send(h11.Request(method="GET", target=f"/bytes/{1024 * MB}",
                                                             headers=[("host", API)])))  # fmt: skip
            await client.reader.readexactly(MB)
            await asyncio.sleep(0.5)
            stalled = origin.sent
            await asyncio.sleep(0.3)
            assert origin.sent == stalled < 256 * MB  # blocked by backpressure, not buffered by the proxy
            await client.close()

    run(body())


# ---- left alone -----------------------------------------------------------------------------


def test_host_without_transforms_is_spliced_with_the_upstream_certificate(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(PLAIN)) as origin, world.proxy(origin.port, tls=True) as proxy:
            with pytest.raises(ssl.SSLCertVerificationError):
                await Client.open(proxy.port, PLAIN, world.ca.cert_pem)  # our CA is not what it gets
            client = await Client.open(proxy.port, PLAIN, world.upstream_ca.cert_pem.bytes())
            assert client.issuer() == "upstream test CA"
            reply = await client.request(PLAIN, headers=[("authorization", "mine")])
            await client.close()
            assert reply.status == 200
            assert origin.requests[-1].header("authorization") == ["mine"]
            assert proxy.metrics()["connections_spliced"] == 2
            assert proxy.metrics()["connections_intercepted"] == 0

    run(body())


@pytest.mark.parametrize("tls", [False, True])
def test_unresolved_host_is_not_transformed(world: World, tls: bool) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(UNRESOLVED) if tls else None) as origin, \
                world.proxy(origin.port, tls=tls) as proxy:  # fmt: skip
            trust = world.upstream_ca.cert_pem.bytes()
            client = await Client.open(proxy.port, UNRESOLVED if tls else None, trust)
            reply = await client.request(UNRESOLVED)
            await client.close()
            assert reply.status == 200
            assert origin.requests[-1].header("authorization") == []
            assert proxy.metrics()["connections_spliced"] == 1

    run(body())


# ---- refused -------------------------------------------------------------------------------


def test_host_other_than_sni_is_misdirected(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            reply = await client.request(PLAIN)
            await client.close()
            assert reply.status == 421 and reply.error()["code"] == "misdirected_request"
            assert origin.requests == []

    run(body())


def test_denied_secret_answers_403_and_sends_nothing(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(DENIED)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, DENIED, world.ca.cert_pem)
            reply = await client.request(DENIED, method="POST", body=lambda: _chunks(1000, 3))
            await client.close()
            assert reply.status == 403
            assert reply.error() == {"code": "secret_denied", "message": f"secret OTHER may not be sent to {DENIED}"}
            assert origin.requests == []
            assert proxy.metrics()["secret_denials"] == 1

    run(body())


def test_upgrade_is_refused(world: World) -> None:
    async def body() -> None:
        async with Origin() as origin, world.proxy(origin.port, tls=False) as proxy:
            client = await Client.open(proxy.port)
            reply = await client.request(API, headers=[("connection", "upgrade"), ("upgrade", "websocket")])
            await client.close()
            assert reply.status == 501 and reply.error()["code"] == "upgrade_not_supported"
            assert origin.requests == []

    run(body())


@pytest.mark.parametrize("case", ["untrusted", "wrong-name"])
def test_bad_upstream_certificate_answers_502_and_sends_nothing(world: World, case: str) -> None:
    async def body() -> None:
        tls = world.origin_tls(API, ca=trustme.CA()) if case == "untrusted" else world.origin_tls("other.example.com")
        async with Origin(tls) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            assert client.issuer() == "cloche test node"
            reply = await client.request(API, method="POST", body=lambda: _chunks(100, 1))
            await client.close()
            assert reply.status == 502
            error = reply.error()
            assert error["code"] == "upstream_tls_verification_failed"
            assert ("certificate" in error["message"]) and (API in error["message"])
            assert origin.requests == []
            assert proxy.metrics()["upstream_errors"] == 1

    run(body())


@pytest.mark.parametrize("tls", [False, True])
def test_upstream_down_answers_502(world: World, tls: bool) -> None:
    async def body() -> None:
        async with Origin() as origin:
            down = origin.port  # closed when the block ends
        async with world.proxy(down, tls=tls) as proxy:
            client = await Client.open(proxy.port, API if tls else None, world.ca.cert_pem)
            reply = await client.request(API)
            await client.close()
            assert reply.status == 502 and reply.error()["code"] == "upstream_refused"
            assert f"{LOCAL}:{down}" in reply.error()["message"]

    run(body())


def test_other_port_is_spliced_through_the_sandboxs_socks_proxy(world: World) -> None:
    async def body() -> None:
        world.socks = EgressProxy("socks.example.net", 1080)
        try:
            async with Origin() as origin, world.proxy(origin.port, tls=None) as proxy:
                client = await Client.open(proxy.port)
                assert (await client.request(API)).status == 200
                await client.close()
                assert world.dialled[-1] == (LOCAL, origin.port, world.socks)
                assert origin.requests[-1].header("authorization") == []  # an HTTP port it is not: untouched
                assert proxy.metrics()["connections_spliced"] == 1
        finally:
            world.socks = None

    run(body())


def test_client_leaving_mid_upload_ends_both_sides(world: World) -> None:
    async def body() -> None:
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            client = await Client.open(proxy.port, API, world.ca.cert_pem)
            head = [("host", API), ("content-length", str(100 * MB))]
            client.writer.write(client.conn.send(h11.Request(method="PUT", target="/echo", headers=head)) or b"")
            client.writer.write(client.conn.send(h11.Data(data=b"y" * MB)) or b"")
            while not origin.requests:
                await asyncio.sleep(0.01)
            await client.close()
            async with asyncio.timeout(5):
                while origin.connections() or proxy.metrics()["connections_intercepted"] != 1:
                    await asyncio.sleep(0.01)

    run(body())


def test_unknown_source_is_closed_at_once(world: World) -> None:
    async def body() -> None:
        world.unknown_source = True
        try:
            async with Origin() as origin, world.proxy(origin.port, tls=False) as proxy:
                reader, writer = await asyncio.open_connection(LOCAL, proxy.port)
                assert await reader.read() == b""
                writer.close()
                assert proxy.metrics()["connections_unknown_source"] == 1
        finally:
            world.unknown_source = False

    run(body())


def open_sockets() -> set[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return {link for link in links if link.startswith("socket:")}


def test_close_leaves_no_task_or_socket_behind(world: World) -> None:
    async def body() -> None:
        sockets = open_sockets()
        tasks = asyncio.all_tasks()
        async with Origin(world.origin_tls(API, PLAIN)) as origin:
            async with world.proxy(origin.port, tls=True) as proxy:
                spliced = await Client.open(proxy.port, PLAIN, world.upstream_ca.cert_pem.bytes())
                assert (await spliced.request(PLAIN)).status == 200
                hanging = await Client.open(proxy.port, API, world.ca.cert_pem)
                pending = asyncio.ensure_future(hanging.request(API, "/hang"))
                while not any(s.target == "/hang" for s in origin.requests):
                    await asyncio.sleep(0.01)
            # the proxy is closed: both clients see their connection end
            with pytest.raises(h11.RemoteProtocolError):  # closed before any response
                await asyncio.wait_for(pending, 5)
            assert await asyncio.wait_for(spliced.reader.read(), 5) == b""
            await spliced.close()
            await hanging.close()
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() == tasks
        assert open_sockets() == sockets

    run(body())
