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

from cloche.node.net import dns_messages as msg
from cloche.node.net.dns_sources import Source, Sources

log = logging.getLogger("cloche.dns")

# Bounds on the resolver's own state, whatever the sandboxes send (and dns_sources.MAX_SOURCES).
MAX_INFLIGHT = 4096
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_PER_SOURCE = 16
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
        self._max_message = max_message_bytes
        self._max_name = max_name_bytes
        self._timeout = upstream_timeout_s
        self._min_ttl = min_ttl_s
        self._max_ttl = max_ttl_s
        self._sources = Sources(rate_per_s, burst)
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
        return self._sources.stats(source)

    def forget(self, source: str) -> None:
        """Drop a source's state (its sandbox went away; the ip may be reused with a fresh budget)."""
        self._sources.forget(source)

    # -- transports --------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self._tasks) >= MAX_INFLIGHT:
            return  # overloaded: drop, the client retries
        self._track(asyncio.get_running_loop().create_task(self._serve_datagram(data, addr)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._answer(data, msg.source_ip(addr), udp=True)
        if reply is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = msg.source_ip(writer.get_extra_info("peername"))
        state = self._sources.get(source)
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
        if len(wire) >= msg.HEADER_BYTES and wire[2] & 0x80:
            return None  # a response (QR set): never answer those, it could loop
        state = self._sources.get(source)
        state.queries += 1
        try:
            return await self._answer_checked(wire, source, state, udp=udp)
        except Exception:
            log.exception("dns: query from %s failed", source)
            return msg.header_reply(wire, dns.rcode.SERVFAIL)

    async def _answer_checked(self, wire: bytes, source: str, state: Source, *, udp: bool) -> bytes | None:
        if not state.bucket.take(time.monotonic()):
            state.rate_limited += 1
            return self._refusal(wire)
        if len(wire) > self._max_message:
            state.refused += 1
            return msg.header_reply(wire, dns.rcode.REFUSED)
        query = msg.parse(wire)
        if query is None:
            return msg.header_reply(wire, dns.rcode.FORMERR)
        reply = await self._resolve(query, source, state)
        return msg.encode(query, reply, udp=udp)

    def _refusal(self, wire: bytes) -> bytes | None:
        """REFUSED, echoing the question when the message is small enough to parse (stub resolvers want it)."""
        query = msg.parse(wire) if len(wire) <= self._max_message else None
        if query is None:
            return msg.header_reply(wire, dns.rcode.REFUSED)
        return msg.encode(query, msg.reply(query, dns.rcode.REFUSED), udp=True)

    async def _resolve(self, query: dns.message.Message, source: str, state: Source) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return msg.reply(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return msg.reply(query, dns.rcode.FORMERR)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        decision = self._decide(source, name) if self._acceptable(question, name) else None
        if decision is None or not decision.allowed:
            state.refused += 1
            return msg.reply(query, dns.rcode.REFUSED)
        if question.rdtype == dns.rdatatype.AAAA:
            return msg.reply(query, dns.rcode.NOERROR)
        upstream = await self._forward(question, decision.upstreams or self._upstreams)
        if upstream is None:
            return msg.reply(query, dns.rcode.SERVFAIL)
        if question.rdtype == dns.rdatatype.A and not await self._learn(source, decision, question.name, upstream):
            return msg.reply(query, dns.rcode.SERVFAIL)
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
            question.name, question.rdtype, question.rdclass, use_edns=0, payload=msg.UDP_PAYLOAD
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
        addrs = [(addr, self._clamp(ttl)) for addr, ttl in msg.chain_addresses(upstream.answer, qname)]
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
        reply = msg.reply(query, rcode if rcode < 16 else dns.rcode.SERVFAIL)
        reply.answer = self._capped(upstream.answer)
        reply.authority = self._capped(upstream.authority)
        reply.additional = self._capped(upstream.additional)
        return reply

    def _capped(self, section: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
        for rrset in section:
            rrset.ttl = min(rrset.ttl, self._max_ttl)
        return section
