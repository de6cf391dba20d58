"""DNS messages as the node's resolver builds and reads them, with dnspython.

Why it exists: the resolver never forwards or returns a client's bytes as they are;
it parses defensively, answers with fresh replies (or a bare header when nothing
parses), sizes them for the client's transport, and follows CNAME chains to find the
addresses the firewall must learn. These pure functions are that message handling,
apart from the serving and policy in dns.py.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HEADER_BYTES = 12
# EDNS payload we offer and accept over UDP: the DNS flag day 2020 value, which avoids IP fragmentation.
UDP_PAYLOAD = 1232
TCP_MAX_MESSAGE = 65535
MAX_CNAME_CHAIN = 16
_OPCODE_MASK = 0x7800


def chain_addresses(answer: list[dns.rrset.RRset], qname: dns.name.Name) -> list[tuple[str, int]]:
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


def parse(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except Exception:  # anything a hostile packet can provoke in the parser
        return None


def reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query, recursion_available=True, our_payload=UDP_PAYLOAD)
    reply.set_rcode(rcode)
    return reply


def encode(query: dns.message.Message, reply: dns.message.Message, *, udp: bool) -> bytes:
    """Wire form within what the client can take; over UDP a reply too big for it is truncated with TC set."""
    limit = TCP_MAX_MESSAGE
    if udp:
        limit = max(512, min(query.payload, UDP_PAYLOAD)) if query.edns >= 0 else 512
    return reply.to_wire(max_size=limit, prefer_truncation=True)


def header_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A bare header answering `wire` (its id, opcode and RD) with `rcode`; None if there is no header."""
    if len(wire) < HEADER_BYTES:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    flags = dns.flags.QR | dns.flags.RA | (flags & (_OPCODE_MASK | dns.flags.RD)) | int(rcode)
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def source_ip(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """The client's ip, with IPv4-mapped IPv6 (from a dual-stack socket) shown as plain IPv4."""
    host = addr[0]
    return host[7:] if host.startswith("::ffff:") and "." in host else host
