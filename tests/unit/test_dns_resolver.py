"""The sandbox DNS resolver against a real (tiny, fixed-record) upstream DNS server on loopback.

Everything here is real sockets on 127.0.0.1: the fake upstream speaks UDP and TCP with
dnspython, the resolver under test listens on an ephemeral port, and the client side is
dnspython's asyncio query functions (or raw sockets for malformed input).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from cloche.node.net.dns import Decision, Resolver

LOCAL = "127.0.0.1"
TIMEOUT = 2.0

# name -> list of (owner, type, ttl, rdatas) put in the answer section
RECORDS: dict[str, list[tuple[str, str, int, list[str]]]] = {
    "allowed.test.": [("allowed.test.", "A", 30, ["198.51.100.10"])],
    "two.test.": [("two.test.", "A", 120, ["198.51.100.20", "198.51.100.21"])],
    "cname.test.": [
        ("cname.test.", "CNAME", 60, ["allowed.test."]),
        ("allowed.test.", "A", 30, ["198.51.100.10"]),
        ("unrelated.test.", "A", 30, ["203.0.113.99"]),  # not on the chain: never learned
    ],
    "long.test.": [("long.test.", "A", 86400, ["198.51.100.30"])],
    "short.test.": [("short.test.", "A", 1, ["198.51.100.31"])],
    "big.test.": [("big.test.", "TXT", 300, [f'"{i:03d}{"x" * 90}"' for i in range(40)])],
    "mx.test.": [("mx.test.", "MX", 300, ["10 mail.mx.test."])],
}


class Upstream:
    """A fixed-record DNS server on UDP and TCP (same port); counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []  # (transport, name, type)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        self.asked.append((transport, question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        records = RECORDS.get(question.name.to_text().lower())
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        for owner, rdtype, ttl, rdatas in records or []:
            if rdtype in ("CNAME", dns.rdatatype.to_text(question.rdtype)):
                response.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", rdtype, rdatas))
        limit = 65535
        if transport == "udp":
            limit = max(512, query.payload) if query.edns >= 0 else 512
        return response.to_wire(max_size=limit, prefer_truncation=True)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(upstream.answer(data, "udp"), addr)

        for _ in range(8):  # the UDP port's TCP twin may be taken by someone else: pick another
            self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(LOCAL, 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._stream, LOCAL, self.port)
                return
            except OSError:
                self._udp.close()
        raise OSError("no port free for both UDP and TCP")

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length), "tcp")
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._udp is not None and self._tcp is not None
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()


@dataclass
class Harness:
    resolver: Resolver
    upstream: Upstream
    learned: list[tuple[str, tuple[int, ...], list[tuple[str, int]]]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the query name of each learned answer
    decided: list[tuple[str, str]] = field(default_factory=list)

    async def query(self, name: str, rdtype: str = "A", *, tcp: bool = False, **kw: Any) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        if tcp:
            return await dns.asyncquery.tcp(q, LOCAL, timeout=TIMEOUT, port=self.resolver.port)
        return await dns.asyncquery.udp(q, LOCAL, timeout=TIMEOUT, port=self.resolver.port)


def default_decide(source: str, name: str) -> Decision | None:
    if source != LOCAL:
        return None
    if name.startswith("denied") or name.endswith(".evil.test"):
        return Decision(allowed=False)
    return Decision(allowed=True, rules=(7, 9))


@asynccontextmanager
async def harness(
    decide: Callable[[str, str], Decision | None] = default_decide,
    learned_error: Exception | None = None,
    upstreams: Callable[[int], list[tuple[str, int]]] | None = None,
    **kw: Any,
) -> AsyncIterator[Harness]:
    upstream = Upstream()
    await upstream.start()
    h: Harness

    def recording_decide(source: str, name: str) -> Decision | None:
        h.decided.append((source, name))
        return decide(source, name)

    async def learned(source: str, name: str, rules: tuple[int, ...], addrs: list[tuple[str, int]]) -> None:
        await asyncio.sleep(0.05)  # a reply sent before this finished would reach the client first
        if learned_error is not None:
            raise learned_error
        h.names.append(name)
        h.learned.append((source, rules, addrs))

    resolver = Resolver(
        host=LOCAL,
        port=0,
        upstreams=upstreams(upstream.port) if upstreams is not None else [(LOCAL, upstream.port)],
        decide=recording_decide,
        learned=learned,
        **kw,
    )
    h = Harness(resolver, upstream)
    await resolver.start()
    try:
        yield h
    finally:
        await resolver.close()
        await upstream.close()


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


def dead_udp_port() -> int:
    """A loopback port nothing listens on (UDP gets ICMP port unreachable, TCP a reset)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def test_allowed_a_is_answered_and_learned_before_the_reply() -> None:
    async def body() -> None:
        async with harness() as h:
            q = dns.message.make_query("Allowed.Test", "A")
            reply = await dns.asyncquery.udp(q, LOCAL, timeout=TIMEOUT, port=h.resolver.port)
            assert h.learned == [(LOCAL, (7, 9), [("198.51.100.10", 30)])]  # done before the reply came back
            assert h.names == ["allowed.test"]  # the name asked for, in lower case: what rules match on
            assert reply.id == q.id
            assert reply.rcode() == dns.rcode.NOERROR
            assert addresses(reply) == ["198.51.100.10"]
            assert reply.answer[0].ttl == 30
            assert h.decided == [(LOCAL, "allowed.test")]  # lowercased, no trailing dot
            assert h.upstream.asked == [("udp", "Allowed.Test.", "A")]

            reply = await h.query("two.test")
            assert sorted(addresses(reply)) == ["198.51.100.20", "198.51.100.21"]
            assert sorted(h.learned[-1][2]) == [("198.51.100.20", 120), ("198.51.100.21", 120)]

    asyncio.run(body())


def test_cname_chain_addresses_are_learned() -> None:
    async def body() -> None:
        async with harness() as h:
            reply = await h.query("cname.test")
            assert reply.rcode() == dns.rcode.NOERROR
            assert [r.rdtype for r in reply.answer][0] == dns.rdatatype.CNAME
            # only addresses on the chain cname.test -> allowed.test are given to the firewall
            assert h.learned == [(LOCAL, (7, 9), [("198.51.100.10", 30)])]

    asyncio.run(body())


def test_denied_name_is_refused_without_asking_upstream() -> None:
    async def body() -> None:
        async with harness() as h:
            for name in ("denied.test", "data-0123abcd.evil.test"):
                reply = await h.query(name)
                assert reply.rcode() == dns.rcode.REFUSED
                assert not reply.answer
            assert h.upstream.asked == []
            assert h.learned == []
            assert h.resolver.stats(LOCAL) == {"queries": 2, "refused": 2, "rate_limited": 0}

    asyncio.run(body())


def test_unknown_source_is_refused() -> None:
    async def body() -> None:
        async with harness(decide=lambda source, name: None) as h:
            reply = await h.query("allowed.test")
            assert reply.rcode() == dns.rcode.REFUSED
            assert h.upstream.asked == []

    asyncio.run(body())


def test_aaaa_is_an_empty_noerror_without_upstream() -> None:
    async def body() -> None:
        async with harness() as h:
            reply = await h.query("allowed.test", "AAAA")
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer == []
            assert h.upstream.asked == []
            reply = await h.query("denied.test", "AAAA")
            assert reply.rcode() == dns.rcode.REFUSED

    asyncio.run(body())


def test_other_types_are_forwarded_and_not_learned() -> None:
    async def body() -> None:
        async with harness() as h:
            reply = await h.query("mx.test", "MX")
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer[0].rdtype == dns.rdatatype.MX
            reply = await h.query("nowhere.test")
            assert reply.rcode() == dns.rcode.NXDOMAIN
            assert h.learned == []

    asyncio.run(body())


def test_ttls_are_clamped() -> None:
    async def body() -> None:
        async with harness(min_ttl_s=5, max_ttl_s=3600) as h:
            reply = await h.query("long.test")
            assert reply.answer[0].ttl == 3600  # the client never caches longer than the firewall allows
            reply = await h.query("short.test")
            assert reply.answer[0].ttl == 1  # lowering is left alone
            assert h.learned == [
                (LOCAL, (7, 9), [("198.51.100.30", 3600)]),
                (LOCAL, (7, 9), [("198.51.100.31", 5)]),
            ]

    asyncio.run(body())


def test_rate_limit_refuses_past_the_burst() -> None:
    async def body() -> None:
        async with harness(rate_per_s=0.001, burst=5) as h:
            rcodes = [(await h.query("allowed.test")).rcode() for _ in range(7)]
            assert rcodes == [dns.rcode.NOERROR] * 5 + [dns.rcode.REFUSED] * 2
            assert len(h.upstream.asked) == 5
            assert h.resolver.stats(LOCAL) == {"queries": 7, "refused": 0, "rate_limited": 2}
            assert h.resolver.stats("127.0.0.2") == {"queries": 0, "refused": 0, "rate_limited": 0}
            h.resolver.forget(LOCAL)  # a new sandbox on the address starts with a full bucket
            assert h.resolver.stats(LOCAL)["queries"] == 0
            assert (await h.query("allowed.test")).rcode() == dns.rcode.NOERROR

    asyncio.run(body())


def test_rate_limit_refills() -> None:
    async def body() -> None:
        # one token a second: three queries in a row stay within it even on a loaded
        # machine (at 20/s, 50 ms between two queries refilled the bucket in a CI run)
        async with harness(rate_per_s=1.0, burst=2) as h:
            assert [(await h.query("denied.test")).rcode() for _ in range(3)][-1] == dns.rcode.REFUSED
            assert h.resolver.stats(LOCAL)["rate_limited"] == 1
            await asyncio.sleep(1.1)
            assert (await h.query("allowed.test")).rcode() == dns.rcode.NOERROR

    asyncio.run(body())


def test_oversized_query_and_long_name_are_refused() -> None:
    async def body() -> None:
        async with harness(max_name_bytes=30) as h:
            padding = dns.edns.GenericOption(65001, b"x" * 600)
            reply = await h.query("allowed.test", use_edns=0, options=[padding])
            assert reply.rcode() == dns.rcode.REFUSED
            reply = await h.query("a" * 40 + ".test")
            assert reply.rcode() == dns.rcode.REFUSED
            assert h.decided == []  # neither got as far as the policy
            assert h.upstream.asked == []
            assert h.resolver.stats(LOCAL) == {"queries": 2, "refused": 2, "rate_limited": 0}

    asyncio.run(body())


def test_malformed_queries() -> None:
    async def body() -> None:
        async with harness() as h:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.connect((LOCAL, h.resolver.port))
                # a valid header claiming a question that is not there -> FORMERR with the same id
                await loop.sock_sendall(s, struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\xff\xff")
                reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), TIMEOUT))
                assert reply.id == 0xBEEF and reply.rcode() == dns.rcode.FORMERR
                # two questions -> FORMERR
                q = dns.message.make_query("allowed.test", "A")
                q.question.append(dns.rrset.RRset(dns.name.from_text("two.test"), dns.rdataclass.IN, dns.rdatatype.A))
                await loop.sock_sendall(s, q.to_wire())
                reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), TIMEOUT))
                assert reply.id == q.id and reply.rcode() == dns.rcode.FORMERR
                # shorter than a header: dropped, and the resolver carries on
                await loop.sock_sendall(s, b"\x01\x02\x03")
                try:
                    await asyncio.wait_for(loop.sock_recv(s, 4096), 0.2)
                    raise AssertionError("a runt packet was answered")
                except TimeoutError:
                    pass
            assert (await h.query("allowed.test")).rcode() == dns.rcode.NOERROR
            assert len(h.upstream.asked) == 1

    asyncio.run(body())


def test_tcp_queries_several_per_connection() -> None:
    async def body() -> None:
        async with harness() as h:
            reply = await h.query("allowed.test", tcp=True)
            assert addresses(reply) == ["198.51.100.10"]
            assert h.learned[-1][2] == [("198.51.100.10", 30)]

            reader, writer = await asyncio.open_connection(LOCAL, h.resolver.port)
            queries = [dns.message.make_query(n, "A") for n in ("allowed.test", "denied.test", "two.test")]
            for q in queries:
                wire = q.to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
            replies = []
            for _ in queries:
                (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
                replies.append(dns.message.from_wire(await reader.readexactly(length)))
            writer.close()
            assert [r.id for r in replies] == [q.id for q in queries]
            assert [r.rcode() for r in replies] == [dns.rcode.NOERROR, dns.rcode.REFUSED, dns.rcode.NOERROR]

    asyncio.run(body())


def test_tcp_idle_connection_is_closed() -> None:
    async def body() -> None:
        async with harness() as h:
            h.resolver.tcp_idle_timeout_s = 0.2
            reader, writer = await asyncio.open_connection(LOCAL, h.resolver.port)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the resolver
            writer.close()

    asyncio.run(body())


def test_truncated_udp_upstream_answer_is_retried_over_tcp() -> None:
    async def body() -> None:
        async with harness() as h:
            reply = await h.query("big.test", "TXT", tcp=True)
            assert reply.rcode() == dns.rcode.NOERROR
            assert len(reply.answer[0]) == 40
            assert [t for t, _, _ in h.upstream.asked] == ["udp", "tcp"]
            # the same answer over UDP to the client is truncated with TC, so it comes back over TCP
            reply = await h.query("big.test", "TXT")
            assert reply.flags & dns.flags.TC

    asyncio.run(body())


def test_upstream_down_is_servfail() -> None:
    async def body() -> None:
        dead = [(LOCAL, dead_udp_port()), (LOCAL, dead_udp_port())]
        async with harness(upstreams=lambda port: dead, upstream_timeout_s=0.3) as h:
            reply = await h.query("allowed.test")
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert h.learned == []

    asyncio.run(body())


def test_next_upstream_after_a_timeout() -> None:
    async def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:  # bound, never answers
            blackhole.bind((LOCAL, 0))
            silent = (LOCAL, blackhole.getsockname()[1])
            async with harness(upstreams=lambda port: [silent, (LOCAL, port)], upstream_timeout_s=0.3) as h:
                reply = await h.query("allowed.test")
                assert addresses(reply) == ["198.51.100.10"]

    asyncio.run(body())


def test_sandbox_upstreams_override_the_defaults() -> None:
    async def body() -> None:
        upstream_port: list[int] = []

        def decide(source: str, name: str) -> Decision | None:
            return Decision(True, (1,), ((LOCAL, upstream_port[0]),))

        def defaults(port: int) -> list[tuple[str, int]]:
            upstream_port.append(port)
            return [(LOCAL, dead_udp_port())]

        async with harness(decide=decide, upstreams=defaults, upstream_timeout_s=0.3) as h:
            reply = await h.query("allowed.test")
            assert addresses(reply) == ["198.51.100.10"]
            assert h.learned == [(LOCAL, (1,), [("198.51.100.10", 30)])]

    asyncio.run(body())


def test_learned_failure_is_servfail() -> None:
    async def body() -> None:
        async with harness(learned_error=RuntimeError("firewall said no")) as h:
            reply = await h.query("allowed.test")
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert reply.answer == []
            # nothing to learn (NXDOMAIN, or a non-A type) is not a failure
            assert (await h.query("nowhere.test")).rcode() == dns.rcode.NXDOMAIN
            assert (await h.query("mx.test", "MX")).rcode() == dns.rcode.NOERROR

    asyncio.run(body())
