"""Dialling upstream through the user's SOCKS5 proxy (E2B's `egress_proxy`, "bring your own proxy").

Why: some users must make their sandboxes' traffic leave from their own network (a fixed egress address, a
corporate gateway, an audit point). When a policy names a SOCKS5 proxy, the egress proxy dials every upstream
connection through it with `open_tunnel` instead of connecting directly; the returned streams carry the
destination's TCP stream, over which the engine speaks TLS/HTTP or splices bytes.

What it guarantees:

* Pinned address: a proxy host name is resolved once, at dial time, by the node's `resolve`, and that
  address is the one connected to; `check_address` vets it first (the node refuses internal addresses), so
  neither the policy nor a DNS change can point the node's own connection at something internal.
* Destination as an address: the SOCKS5 CONNECT names the IP address the firewall already judged, never a
  host name the proxy would resolve on its own.
* TLS to the proxy when asked: the whole SOCKS session (credentials included) runs inside TLS >= 1.2, always
  verified, against `server_name` (default: the host) and either `ca_cert` alone or the system trust store.
* Fail closed: every failure raises `TunnelError`, naming the proxy and the cause. There is no fallback, to
  plaintext or to a direct connection; the caller fails the sandbox's connection.

The SOCKS5 protocol (RFC 1928) and username/password auth (RFC 1929) come from `python-socks`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio.v2 import Proxy

from cloche.node.net.rules import EgressProxy

__all__ = ["TunnelError", "open_tunnel", "proxy_tls_context"]


class TunnelError(Exception):
    """The tunnel through the user's SOCKS5 proxy could not be opened; the message names the proxy and why.
    The connection must fail: there is no fallback to a direct connection."""


class _PinnedNameContext(ssl.SSLContext):
    """An SSL context whose connections always use `pinned_name` for SNI and certificate verification,
    whatever address the socket was dialled by (we connect to the pinned IP, but verify the proxy's name)."""

    pinned_name: str

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: Any = None, session: Any = None) -> ssl.SSLObject:  # fmt: skip
        return super().wrap_bio(incoming, outgoing, server_side, self.pinned_name, session)


def proxy_tls_context(proxy: EgressProxy) -> ssl.SSLContext:
    """The client context for TLS to the proxy: verified, TLS >= 1.2, the proxy's `ca_cert` as the only trust
    anchors when given (else the system store), SNI and verification name `server_name or host`. Contexts are
    shared between connections with the same name and anchors (loading a trust store is not free)."""
    return _tls_context(proxy.server_name or proxy.host, proxy.ca_cert or None, proxy.address)


@functools.lru_cache(maxsize=64)
def _tls_context(name: str, ca_cert: str | None, address: str) -> ssl.SSLContext:
    ctx = _PinnedNameContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.pinned_name = name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    if ca_cert:
        try:
            ctx.load_verify_locations(cadata=ca_cert)
        except (ssl.SSLError, ValueError) as e:
            raise TunnelError(f"SOCKS5 proxy {address}: its ca_cert is not a usable PEM certificate: {e}") from e
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


async def _proxy_address(proxy: EgressProxy, resolve: Callable[[str], Awaitable[list[str]]],
                         check_address: Callable[[str], None]) -> str:  # fmt: skip
    """The one address to dial for this connection: the literal, or the name's first answer; every address
    the name resolved to must pass check_address (a mix of outside and inside addresses is refused)."""
    literal = _ip(proxy.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            answers = await resolve(proxy.host)
        except Exception as e:
            why = str(e) or type(e).__name__
            raise TunnelError(f"SOCKS5 proxy {proxy.address}: cannot resolve {proxy.host!r}: {why}") from e
        addresses = []
        for a in answers:
            ip = _ip(a)
            if ip is None:
                raise TunnelError(f"SOCKS5 proxy {proxy.address}: resolving {proxy.host!r} gave {a!r}, not an address")
            addresses.append(ip)
        if not addresses:
            raise TunnelError(f"SOCKS5 proxy {proxy.address}: {proxy.host!r} has no address")
    for ip in addresses:
        try:
            check_address(ip)
        except Exception as e:
            raise TunnelError(f"SOCKS5 proxy {proxy.address} ({ip}) is not an allowed address: {e}") from e
    return addresses[0]


def _describe(e: BaseException) -> str:
    if isinstance(e, ProxyError):
        text = str(e)
        if "authentication" in text.lower():
            return f"authentication failed: {text}"
        return f"SOCKS5 error: {text}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {e.verify_message or e}"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    if isinstance(e, ProxyConnectionError | ConnectionError):
        return f"cannot connect: {os.strerror(e.errno) if e.errno else e}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


async def open_tunnel(proxy: EgressProxy, dst_ip: str, dst_port: int, *,
                      resolve: Callable[[str], Awaitable[list[str]]], check_address: Callable[[str], None],
                      timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
    """Open a TCP stream to dst_ip:dst_port through the SOCKS5 `proxy`, within `timeout` seconds in all.

    `resolve(name)` gives the proxy name's addresses (called only when `proxy.host` is a name);
    `check_address(ip)` raises when the node must not connect to ip. Raises TunnelError on any failure.
    """
    dst = _ip(dst_ip)
    if dst is None:
        raise TunnelError(f"SOCKS5 proxy {proxy.address}: the destination must be an IP address, not {dst_ip!r}")
    if not 0 < dst_port < 65536:
        raise TunnelError(f"SOCKS5 proxy {proxy.address}: bad destination port {dst_port}")
    where = f"SOCKS5 proxy {proxy.address}"
    try:
        async with asyncio.timeout(timeout):
            ip = await _proxy_address(proxy, resolve, check_address)
            if ip != proxy.host:
                where = f"SOCKS5 proxy {proxy.address} ({ip})"
            tunnel = Proxy(
                proxy_type=ProxyType.SOCKS5,
                host=ip,
                port=proxy.port,
                username=proxy.username,
                password=proxy.password if proxy.username is not None else None,
                rdns=False,
                proxy_ssl=proxy_tls_context(proxy) if proxy.tls else None,
            )
            stream = await tunnel.connect(dest_host=dst, dest_port=dst_port, timeout=timeout)
    except TunnelError:
        raise
    except (TimeoutError, ProxyTimeoutError) as e:
        raise TunnelError(f"{where}: timed out after {timeout:g}s opening a tunnel to {dst}:{dst_port}") from e
    except Exception as e:  # ProxyError, OSError (ssl.SSLError too), EOFError, anything: never fall back
        raise TunnelError(f"{where}: {_describe(e)} (tunnel to {dst}:{dst_port})") from e
    return stream.reader, stream.writer
