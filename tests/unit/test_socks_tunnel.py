"""open_tunnel against a real SOCKS5 server (Dante, with username auth and a TLS front; see tests/netlab/socksd.py)
on loopback, and real destination servers on loopback that count their connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

from cloche.cluster.local.process import free_ports
from cloche.node.net.egress.socks import TunnelError, open_tunnel
from cloche.node.net.rules import EgressProxy
from tests.netlab import SOCKS_PASSWORD, SOCKS_USER, SocksProxy, TestPki

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the proxy runs in its own mount namespace)"),
    pytest.mark.skipif(shutil.which("danted") is None, reason="needs Dante (apt package dante-server)"),
]

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def socks(pki) -> Iterator[SocksProxy]:
    with SocksProxy(pki, LOOPBACK, *free_ports(2), server_name="socks.test") as proxy:
        yield proxy


class Counting:
    """A loopback TCP server run by the test's event loop: echoes, or (silent=True) accepts and says nothing."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.silent:
                await reader.read()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Counting:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


def allow_all(ip: str) -> None:
    pass


async def no_dns(name: str) -> list[str]:
    raise AssertionError(f"resolve({name!r}) should not have been called")


async def echo_through(proxy: EgressProxy, dst_port: int, **kw) -> bytes:
    kw.setdefault("resolve", no_dns)
    kw.setdefault("check_address", allow_all)
    reader, writer = await open_tunnel(proxy, LOOPBACK, dst_port, **kw)
    try:
        out = b""
        for word in (b"hello ", b"through ", b"socks"):
            writer.write(word)
            await writer.drain()
            out += await asyncio.wait_for(reader.readexactly(len(word)), 5)
        return out
    finally:
        writer.close()


def plain(socks: SocksProxy, **kw) -> EgressProxy:
    return EgressProxy(**{"host": LOOPBACK, "port": socks.port, "username": SOCKS_USER, "password": SOCKS_PASSWORD,
                          **kw})  # fmt: skip


def with_tls(socks: SocksProxy, **kw) -> EgressProxy:
    return EgressProxy(**{"host": LOOPBACK, "port": socks.tls_port, "username": SOCKS_USER,
                          "password": SOCKS_PASSWORD, "tls": True, "server_name": "socks.test",
                          "ca_cert": socks.ca_pem, **kw})  # fmt: skip


def test_echo_through_the_proxy_with_auth(socks):
    async def main():
        async with Counting() as dst:
            assert await echo_through(plain(socks), dst.port) == b"hello through socks"
            assert dst.connections == 1

    asyncio.run(main())


def test_a_proxy_name_is_resolved_once_and_checked(socks):
    asked, checked = [], []

    async def resolve(name: str) -> list[str]:
        asked.append(name)
        return [LOOPBACK]

    async def main():
        async with Counting() as dst:
            got = await echo_through(plain(socks, host="socks.test"), dst.port, resolve=resolve,
                                     check_address=checked.append)  # fmt: skip
            assert got == b"hello through socks"

    asyncio.run(main())
    assert asked == ["socks.test"] and checked == [LOOPBACK]


def test_wrong_password_is_an_auth_failure(socks):
    async def main():
        async with Counting() as dst:
            with pytest.raises(TunnelError) as err:
                await echo_through(plain(socks, password="wrong"), dst.port)
            assert dst.connections == 0
            return str(err.value)

    message = asyncio.run(main())
    assert "authentication" in message and f"{LOOPBACK}:{socks.port}" in message


def test_no_credentials_when_the_proxy_requires_them(socks):
    async def main():
        async with Counting() as dst:
            with pytest.raises(TunnelError, match=f"{LOOPBACK}:{socks.port}"):
                await echo_through(plain(socks, username=None, password=None), dst.port)
            assert dst.connections == 0

    asyncio.run(main())


def test_proxy_down_fails_closed_without_connecting_directly():
    (dead,) = free_ports(1)

    async def main():
        async with Counting() as dst:
            proxy = EgressProxy(host=LOOPBACK, port=dead, username=SOCKS_USER, password=SOCKS_PASSWORD)
            with pytest.raises(TunnelError, match=f"{LOOPBACK}:{dead}.*cannot connect"):
                await echo_through(proxy, dst.port)
            await asyncio.sleep(0.1)
            assert dst.connections == 0  # no fallback to a direct connection

    asyncio.run(main())


def test_destination_refused_by_way_of_the_proxy(socks):
    async def main():
        with pytest.raises(TunnelError, match="SOCKS5 error"):
            await echo_through(plain(socks), free_ports(1)[0])

    asyncio.run(main())


def test_not_a_socks_server():
    async def main():
        async with Counting() as dst, Counting() as not_socks:  # an echo server answers the greeting with itself
            proxy = EgressProxy(host=LOOPBACK, port=not_socks.port, username=SOCKS_USER, password=SOCKS_PASSWORD)
            with pytest.raises(TunnelError, match=f"{LOOPBACK}:{not_socks.port}"):
                await echo_through(proxy, dst.port)
            assert dst.connections == 0

    asyncio.run(main())


def test_a_silent_proxy_times_out():
    async def main():
        async with Counting() as dst, Counting(silent=True) as silent:
            proxy = EgressProxy(host=LOOPBACK, port=silent.port)
            with pytest.raises(TunnelError, match="timed out after 0.5s"):
                await echo_through(proxy, dst.port, timeout=0.5)
            assert dst.connections == 0

    asyncio.run(main())


def test_tls_to_the_proxy_with_its_ca(socks):
    async def main():
        async with Counting() as dst:
            assert await echo_through(with_tls(socks), dst.port) == b"hello through socks"

            async def resolve(name: str) -> list[str]:
                return [LOOPBACK]

            by_name = with_tls(socks, host="socks.test", server_name=None)  # the name is the verification name
            assert await echo_through(by_name, dst.port, resolve=resolve) == b"hello through socks"
            assert dst.connections == 2

    asyncio.run(main())


def test_tls_to_the_proxy_with_the_wrong_ca_or_name_fails(socks, tmp_path):
    other = TestPki(tmp_path)

    async def main():
        async with Counting() as dst:
            with pytest.raises(TunnelError, match="certificate verif"):
                await echo_through(with_tls(socks, ca_cert=other.ca_pem), dst.port)
            with pytest.raises(TunnelError, match="certificate verif"):
                await echo_through(with_tls(socks, server_name="elsewhere.test"), dst.port)
            with pytest.raises(TunnelError, match="certificate verif"):  # the system store does not know the test CA
                await echo_through(with_tls(socks, ca_cert=None), dst.port)
            assert dst.connections == 0

    asyncio.run(main())


def test_tls_to_a_plain_proxy_never_falls_back_to_plaintext(socks):
    async def main():
        async with Counting() as dst:
            # Dante waits for a SOCKS greeting that never comes: the handshake times out (or fails), no retry
            with pytest.raises(TunnelError, match="TLS|timed out"):
                await echo_through(with_tls(socks, port=socks.port), dst.port, timeout=1)
            assert dst.connections == 0

    asyncio.run(main())


def test_check_address_stops_the_dial(socks):
    async def resolve(name: str) -> list[str]:
        return ["198.51.100.80", LOOPBACK]

    def no_loopback(ip: str) -> None:
        if ip.startswith("127."):
            raise PermissionError(f"{ip} is internal")

    async def main():
        async with Counting() as dst, Counting() as proxy_port:
            for proxy, kw in ((plain(socks), {}), (plain(socks, host="mixed.test"), {"resolve": resolve})):
                with pytest.raises(TunnelError, match=r"127\.0\.0\.1 is internal"):
                    await echo_through(proxy, dst.port, check_address=no_loopback, **kw)
            lone = EgressProxy(host=LOOPBACK, port=proxy_port.port)
            with pytest.raises(TunnelError, match="not an allowed address"):
                await echo_through(lone, dst.port, check_address=no_loopback)
            await asyncio.sleep(0.1)
            assert proxy_port.connections == 0 and dst.connections == 0  # the proxy was never even contacted

    asyncio.run(main())


def test_destination_must_be_an_address(socks):
    async def main():
        with pytest.raises(TunnelError, match="must be an IP address"):
            await open_tunnel(plain(socks), "example.test", 80, resolve=no_dns, check_address=allow_all)

    asyncio.run(main())
