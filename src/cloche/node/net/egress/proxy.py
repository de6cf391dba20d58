"""The node's egress proxy server: per connection, intercept and rewrite or splice through.

nftables redirects the TCP connections of sandboxes that have transforms or a SOCKS5
proxy to this server's port, after their policy allowed them. For each connection the
server finds the sandbox (from the source address) and the original destination
(SO_ORIGINAL_DST), peeks at the first bytes without consuming them, and then:

- HTTPS port, SNI names a host with transforms that the sandbox resolved to that
  address: TLS to upstream (verified for the SNI name), TLS to the sandbox with a leaf
  of the node's CA, and the HTTP relay between them (relay.py);
- HTTP port, Host has transforms and was resolved to that address: the relay, plain;
- anything else: a splice, bytes copied untouched (no TLS interception at all).

Upstream connections always go to the original destination address (never a fresh
resolution of the name: the firewall judged that address), through the node's `dial`,
which uses the sandbox's SOCKS5 proxy when it has one. The server keeps counters for
/metrics and `close()` ends every connection it serves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable

from cloche.node.net.egress.ca import NodeCA
from cloche.node.net.egress.context import ConnectionContext, Lookup, SecretLookup
from cloche.node.net.egress.peek import peek_host, peek_sni
from cloche.node.net.egress.relay import Relay
from cloche.node.net.egress.splice import splice
from cloche.node.net.egress.streams import abort, accept_streams, close_streams
from cloche.node.net.egress.upstream import Dial, Upstream, UpstreamError, client_context, connect

log = logging.getLogger("cloche.egress")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
COUNTERS = ("connections_intercepted", "connections_spliced", "connections_unknown_source", "requests_transformed",
            "secret_denials", "upstream_errors")  # fmt: skip
BACKLOG = 1024


def so_original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was headed before nftables sent it here."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
    port, packed = struct.unpack_from("!2xH4s", raw)
    return str(ipaddress.IPv4Address(packed)), port


class EgressProxyServer:
    def __init__(self, *, ca: NodeCA, lookup: Lookup, secrets: SecretLookup, dial: Dial,
                 upstream_cafile: str | None = None, http_ports: tuple[int, ...] = (80,),
                 https_ports: tuple[int, ...] = (443,), host: str = "0.0.0.0", port: int = 0,
                 original_dst: Callable[[socket.socket], tuple[str, int]] = so_original_dst) -> None:  # fmt: skip
        self._ca, self._lookup, self._secrets, self._dial = ca, lookup, secrets, dial
        self._upstream_tls = client_context(upstream_cafile)
        self._http_ports, self._https_ports = frozenset(http_ports), frozenset(https_ports)
        self._host = host
        self.port = port
        self._original_dst = original_dst
        self._counters: Counter[str] = Counter()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (on `port`; 0 picks one, then `self.port` holds it)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self.port))
            listener.listen(BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepting = asyncio.ensure_future(self._accept(listener))

    def metrics(self) -> dict[str, int]:
        """Counters since start: connections intercepted / spliced / from unknown sources,
        requests transformed, secret denials, upstream errors."""
        return {name: self._counters[name] for name in COUNTERS}

    async def close(self) -> None:
        """Stop listening and end every open connection (sockets closed when this returns)."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.wait({self._accepting})
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        tasks = set(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, (source, _) = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                log.warning("egress proxy: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._serve(sock, source))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, sock: socket.socket, source: str) -> None:
        try:
            ctx = self._lookup(source)
            if ctx is None:
                self._counters["connections_unknown_source"] += 1
                return
            ip, port = self._original_dst(sock)
            if port in self._https_ports:
                sni = await peek_sni(sock)
                if sni and ctx.transforms_for(sni) and ctx.resolved(sni, ip):
                    await self._intercept(sock, ctx, ip, port, sni)
                    return
            elif port in self._http_ports:
                host = await peek_host(sock)
                if host and ctx.transforms_for(host) and ctx.resolved(host, ip):
                    await self._intercept(sock, ctx, ip, port, None)
                    return
            await self._splice(sock, ctx, ip, port)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("egress proxy: connection from %s ended: %r", source, exc)
        except Exception:
            log.exception("egress proxy: connection from %s failed", source)
        finally:
            sock.close()

    async def _intercept(self, sock: socket.socket, ctx: ConnectionContext, ip: str, port: int,
                         sni: str | None) -> None:  # fmt: skip
        """The HTTP relay; for HTTPS (`sni` given), TLS on both sides, upstream verified."""
        self._counters["connections_intercepted"] += 1
        tls = self._upstream_tls if sni else None
        upstream = Upstream(lambda: connect(self._dial, ip, port, ctx.socks, tls, sni))
        upstream.start()  # while the sandbox side's handshake runs
        writer = None
        try:
            reader, writer = await accept_streams(sock, self._ca.server_context(sni) if sni else None)
            relay = Relay((reader, writer), upstream, ctx=ctx, secrets=self._secrets, dst_ip=ip, sni=sni,
                          counters=self._counters)  # fmt: skip
            await relay.run()
        except asyncio.CancelledError:
            abort(writer)
            raise
        finally:
            await upstream.close()
            await close_streams(writer)

    async def _splice(self, sock: socket.socket, ctx: ConnectionContext, ip: str, port: int) -> None:
        self._counters["connections_spliced"] += 1
        try:
            upstream = await connect(self._dial, ip, port, ctx.socks)
        except UpstreamError as exc:
            self._counters["upstream_errors"] += 1
            log.info("egress %s: %s", ctx.sandbox_id, exc.message)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, as refused
            return
        writer = None
        try:
            client = await accept_streams(sock)
            writer = client[1]
            await splice(client, upstream)
        except asyncio.CancelledError:
            abort(writer, upstream[1])
            raise
        finally:
            await close_streams(writer, upstream[1])
