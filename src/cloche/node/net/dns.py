"""The node's DNS resolver for sandboxes: hostname egress rules enforced at lookup time.

Why a resolver of our own: a sandbox's egress rules name hosts ("api.example.com",
"*.pypi.org"), but the firewall only sees IP addresses. Every sandbox's resolv.conf
points here and nftables redirects any other port-53 traffic here too, so this is the
only way a sandbox can turn a name into an address. For each query we ask the node
(`decide`) whether the source sandbox may resolve the name:

- denied names, and sources that are not sandboxes, get REFUSED; nothing goes upstream;
- allowed names are forwarded to an upstream resolver (the sandbox's own, or ours);
- the A records of an allowed answer are handed to the firewall (`learned`) with their
  TTLs *before* the reply leaves, so the sandbox can never hold an address the firewall
  has not been told to allow, and a failure there turns into SERVFAIL rather than an
  address that will not connect;
- AAAA gets an empty NOERROR: IPv6 is off inside sandboxes, and an empty answer makes
  clients fall back to IPv4 at once instead of timing out.

DNS is also a classic exfiltration channel (data encoded in query names, answers in
TXT records), even towards names that look harmless. So each source IP has a token
bucket, queries and names have size caps, only one question per query is accepted,
and we never forward the client's message as is: upstream gets a fresh query carrying
only the question (no client EDNS options or additional records, a new random id and
source port), and the client gets our own reply built around the upstream's records,
with its own query id and TTLs capped at `max_ttl_s`.

Everything runs on the event loop: UDP and TCP (RFC 1035 two-byte length framing,
several queries per connection, an idle timeout) are served with asyncio, and upstream
queries use dnspython's asyncio functions, retrying over TCP when a UDP answer is
truncated and moving to the next upstream on timeout or error.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("cloche.dns")

HEADER_BYTES = 12
# EDNS payload we offer and accept over UDP: the DNS flag day 2020 value, which avoids IP fragmentation.
UDP_PAYLOAD = 1232
TCP_MAX_MESSAGE = 65535
MAX_CNAME_CHAIN = 16
# Bounds on the resolver's own state, whatever the sandboxes send.
MAX_SOURCES = 65536
MAX_INFLIGHT = 4096
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_PER_SOURCE = 16
_OPCODE_MASK = 0x7800
_REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


@dataclass(frozen=True)
class Decision:
    """What the node says about one (sandbox, name) lookup."""

    allowed: bool
    # Ids of the sandbox's hostname rules the name matched; passed back to `learned`.
    rules: tuple[int, ...] = ()
    # The sandbox's own upstream servers; () means the resolver's defaults.
    upstreams: tuple[tuple[str, int], ...] = ()


# (source ip, query name lowercased without trailing dot) -> None if the source is not a known sandbox.
Decide = Callable[[str, str], Decision | None]
# (source ip, rule ids, [(ipv4 address, ttl seconds)]): the firewall allows these addresses for that long.
# (source ip, query name lowercased without trailing dot, matched rule ids, [(address, ttl)])
Learned = Callable[[str, str, tuple[int, ...], list[tuple[str, int]]], Awaitable[None]]


@dataclass
class _Bucket:
    """A token bucket: `burst` queries at once, then `rate` per second."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class _Source:
    """Per source ip: its rate limit and its counters."""

    bucket: _Bucket
    queries: int = 0
    refused: int = 0
    rate_limited: int = 0
    tcp_connections: int = 0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to clients that went away; nothing to do.
        log.debug("dns: udp error: %s", exc)


class Resolver:
    """The per-node DNS resolver; see the module docstring."""

    # Seconds a TCP connection may sit between (or inside) queries; an attribute so tests can shorten it.
    tcp_idle_timeout_s: float = 10.0

    def __init__(
        self,
        *,
        host: str,
        port: int,
        upstreams: list[tuple[str, int]],
        decide: Decide,
        learned: Learned,
        rate_per_s: float = 20.0,
        burst: int = 50,
        max_message_bytes: int = 512,
        max_name_bytes: int = 253,
        upstream_timeout_s: float = 2.0,
        min_ttl_s: int = 5,
        max_ttl_s: int = 3600,
    ) -> None:
        self.host = host
        self.port = port
        self._upstreams = tuple(upstreams)
        self._decide = decide
        self._learned = learned
        self._rate = rate_per_s
        self._burst = burst
        self._max_message = max_message_bytes
        self._max_name = max_name_bytes
        self._timeout = upstream_timeout_s
        self._min_ttl = min_ttl_s
        self._max_ttl = max_ttl_s
        self._sources: dict[str, _Source] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_total = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on host:port (port 0: one ephemeral port, the same for both)."""
        attempts = 8 if self.port == 0 else 1
        for attempt in range(attempts):
            udp, port = await self._bind_udp(self.port)
            try:
                self._tcp = await asyncio.start_server(self._serve_stream, self.host, port)
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._udp, self.port = udp, port
            log.info("dns: resolver listening on %s:%d (udp+tcp)", self.host, port)
            return

    async def _bind_udp(self, port: int) -> tuple[asyncio.DatagramTransport, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._on_datagram), local_addr=(self.host, port)
        )
        return transport, transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        """Stop listening and abandon queries in flight."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        server, self._tcp = self._tcp, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- per-source state --------------------------------------------------------------------------------------

    def stats(self, source: str) -> dict[str, int]:
        """Counters for one source ip: every message, REFUSED answers (other than rate limiting), rate limited."""
        state = self._sources.get(source)
        if state is None:
            return {"queries": 0, "refused": 0, "rate_limited": 0}
        return {"queries": state.queries, "refused": state.refused, "rate_limited": state.rate_limited}

    def forget(self, source: str) -> None:
        """Drop a source's state (its sandbox went away; the ip may be reused with a fresh budget)."""
        self._sources.pop(source, None)

    def _source(self, source: str) -> _Source:
        state = self._sources.pop(source, None)
        if state is None:
            if len(self._sources) >= MAX_SOURCES:
                self._sources.pop(next(iter(self._sources)))
            bucket = _Bucket(self._rate, float(self._burst), float(self._burst), time.monotonic())
            state = _Source(bucket)
        self._sources[source] = state  # most recently used last, so eviction drops the stalest
        return state

    # -- transports --------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self._tasks) >= MAX_INFLIGHT:
            return  # overloaded: drop, the client retries
        self._track(asyncio.get_running_loop().create_task(self._serve_datagram(data, addr)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._answer(data, _source_ip(addr), udp=True)
        if reply is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = _source_ip(writer.get_extra_info("peername"))
        state = self._source(source)
        task = asyncio.current_task()
        if self._tcp_total >= MAX_TCP_CONNECTIONS or state.tcp_connections >= MAX_TCP_PER_SOURCE or task is None:
            writer.close()
            return
        self._track(task)
        self._tcp_total += 1
        state.tcp_connections += 1
        try:
            await self._stream_queries(reader, writer, source)
        except (OSError, TimeoutError):
            pass
        finally:
            self._tcp_total -= 1
            state.tcp_connections -= 1
            writer.close()

    async def _stream_queries(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str) -> None:
        while (wire := await self._read_frame(reader)) is not None:
            reply = await self._answer(wire, source, udp=False)
            if reply is None:
                return  # not even a DNS header: the stream is garbage
            writer.write(struct.pack("!H", len(reply)) + reply)
            await asyncio.wait_for(writer.drain(), self.tcp_idle_timeout_s)

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """One length-prefixed message (at most 64 KiB by construction), or None at end of stream."""
        try:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout_s))
            if length == 0:
                return None
            return await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout_s)
        except asyncio.IncompleteReadError:
            return None

    # -- one query ---------------------------------------------------------------------------------------------

    async def _answer(self, wire: bytes, source: str, *, udp: bool) -> bytes | None:
        """The reply to one message from `source`, or None to send nothing."""
        if len(wire) >= HEADER_BYTES and wire[2] & 0x80:
            return None  # a response (QR set): never answer those, it could loop
        state = self._source(source)
        state.queries += 1
        try:
            return await self._answer_checked(wire, source, state, udp=udp)
        except Exception:
            log.exception("dns: query from %s failed", source)
            return _header_reply(wire, dns.rcode.SERVFAIL)

    async def _answer_checked(self, wire: bytes, source: str, state: _Source, *, udp: bool) -> bytes | None:
        if not state.bucket.take(time.monotonic()):
            state.rate_limited += 1
            return self._refusal(wire)
        if len(wire) > self._max_message:
            state.refused += 1
            return _header_reply(wire, dns.rcode.REFUSED)
        query = _parse(wire)
        if query is None:
            return _header_reply(wire, dns.rcode.FORMERR)
        reply = await self._resolve(query, source, state)
        return _encode(query, reply, udp=udp)

    def _refusal(self, wire: bytes) -> bytes | None:
        """REFUSED, echoing the question when the message is small enough to parse (stub resolvers want it)."""
        query = _parse(wire) if len(wire) <= self._max_message else None
        if query is None:
            return _header_reply(wire, dns.rcode.REFUSED)
        return _encode(query, _reply(query, dns.rcode.REFUSED), udp=True)

    async def _resolve(self, query: dns.message.Message, source: str, state: _Source) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return _reply(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        decision = self._decide(source, name) if self._acceptable(question, name) else None
        if decision is None or not decision.allowed:
            state.refused += 1
            return _reply(query, dns.rcode.REFUSED)
        if question.rdtype == dns.rdatatype.AAAA:
            return _reply(query, dns.rcode.NOERROR)
        upstream = await self._forward(question, decision.upstreams or self._upstreams)
        if upstream is None:
            return _reply(query, dns.rcode.SERVFAIL)
        if question.rdtype == dns.rdatatype.A and not await self._learn(source, decision, question.name, upstream):
            return _reply(query, dns.rcode.SERVFAIL)
        return self._relay(query, upstream)

    def _acceptable(self, question: dns.rrset.RRset, name: str) -> bool:
        """Internet class, a name within the cap, and no zone transfers or meta types (ANY is fine)."""
        if question.rdclass != dns.rdataclass.IN or len(name.encode()) > self._max_name:
            return False
        if question.rdtype in _REFUSED_TYPES:
            return False
        return question.rdtype == dns.rdatatype.ANY or not dns.rdatatype.is_metatype(question.rdtype)

    async def _forward(
        self, question: dns.rrset.RRset, upstreams: tuple[tuple[str, int], ...]
    ) -> dns.message.Message | None:
        """Ask each upstream in turn (UDP, then TCP if truncated); None if they all fail."""
        request = dns.message.make_query(
            question.name, question.rdtype, question.rdclass, use_edns=0, payload=UDP_PAYLOAD
        )
        for host, port in upstreams:
            try:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    request, host, timeout=self._timeout, port=port, ignore_unexpected=True
                )
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as e:
                log.debug("dns: upstream %s:%d failed for %s: %r", host, port, question.name, e)
                continue
            return response
        return None

    async def _learn(
        self, source: str, decision: Decision, qname: dns.name.Name, upstream: dns.message.Message
    ) -> bool:
        """Tell the firewall about the answer's addresses; False if that failed (the caller answers SERVFAIL)."""
        if upstream.rcode() != dns.rcode.NOERROR:
            return True
        addrs = [(addr, self._clamp(ttl)) for addr, ttl in _chain_addresses(upstream.answer, qname)]
        if not addrs:
            return True
        try:
            await self._learned(source, qname.to_text(omit_final_dot=True).lower(), decision.rules, addrs)
        except Exception:
            log.exception("dns: learning %s for %s failed", addrs, source)
            return False
        return True

    def _clamp(self, ttl: int) -> int:
        return max(self._min_ttl, min(self._max_ttl, ttl))

    def _relay(self, query: dns.message.Message, upstream: dns.message.Message) -> dns.message.Message:
        """Our reply to the client, carrying the upstream's rcode and records with TTLs capped."""
        rcode = upstream.rcode()
        reply = _reply(query, rcode if rcode < 16 else dns.rcode.SERVFAIL)
        reply.answer = self._capped(upstream.answer)
        reply.authority = self._capped(upstream.authority)
        reply.additional = self._capped(upstream.additional)
        return reply

    def _capped(self, section: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
        for rrset in section:
            rrset.ttl = min(rrset.ttl, self._max_ttl)
        return section


def _chain_addresses(answer: list[dns.rrset.RRset], qname: dns.name.Name) -> list[tuple[str, int]]:
    """The A addresses for `qname` in an answer section, following its CNAME chain, with their TTLs."""
    cnames = {r.name: r[0].target for r in answer if r.rdtype == dns.rdatatype.CNAME and len(r) > 0}
    chain = [qname]
    while chain[-1] in cnames and cnames[chain[-1]] not in chain and len(chain) <= MAX_CNAME_CHAIN:
        chain.append(cnames[chain[-1]])
    found: dict[str, int] = {}
    for rrset in answer:
        if rrset.rdtype != dns.rdatatype.A or rrset.rdclass != dns.rdataclass.IN or rrset.name not in chain:
            continue
        for rdata in rrset:
            found[rdata.address] = max(found.get(rdata.address, 0), rrset.ttl)
    return list(found.items())


def _parse(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except Exception:  # anything a hostile packet can provoke in the parser
        return None


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query, recursion_available=True, our_payload=UDP_PAYLOAD)
    reply.set_rcode(rcode)
    return reply


def _encode(query: dns.message.Message, reply: dns.message.Message, *, udp: bool) -> bytes:
    """Wire form within what the client can take; over UDP a reply too big for it is truncated with TC set."""
    limit = TCP_MAX_MESSAGE
    if udp:
        limit = max(512, min(query.payload, UDP_PAYLOAD)) if query.edns >= 0 else 512
    return reply.to_wire(max_size=limit, prefer_truncation=True)


def _header_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A bare header answering `wire` (its id, opcode and RD) with `rcode`; None if there is no header."""
    if len(wire) < HEADER_BYTES:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    flags = dns.flags.QR | dns.flags.RA | (flags & (_OPCODE_MASK | dns.flags.RD)) | int(rcode)
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def _source_ip(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """The client's ip, with IPv4-mapped IPv6 (from a dual-stack socket) shown as plain IPv4."""
    host = addr[0]
    return host[7:] if host.startswith("::ffff:") and "." in host else host
