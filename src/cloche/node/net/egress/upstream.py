"""The upstream side of an intercepted connection: dialled, verified, named when it fails.

The proxy always connects to the connection's original destination (the address the
firewall judged), never to what a name resolves to now; the node's dial function goes
there directly or through the sandbox's SOCKS5 proxy. For HTTPS the proxy is the TLS
client, and it verifies the upstream certificate for the SNI name against the system
trust store plus an optional extra CA file: the sandbox only ever sees the node's own
certificate, so this check is the only one that happens. Failures become UpstreamError
with a stable code and a message naming the cause, which the relay answers as a 502.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from cloche.node.net.egress.streams import HANDSHAKE_TIMEOUT_S, Streams, abort, finish, no_delay
from cloche.node.net.rules import EgressProxy

CONNECT_TIMEOUT_S = 10.0

# (original destination IPv4 address, port, the sandbox's SOCKS5 proxy or None) -> streams
Dial = Callable[[str, int, EgressProxy | None], Awaitable[Streams]]


class UpstreamError(Exception):
    """The upstream could not be reached or did not speak HTTP/1.1 properly."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """Verification against the system trust store and, when given, `cafile` as well
    (`create_default_context(cafile=...)` would use the file instead of the store)."""
    context = ssl.create_default_context()
    if cafile:
        context.load_verify_locations(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


async def connect(dial: Dial, ip: str, port: int, socks: EgressProxy | None,
                  tls: ssl.SSLContext | None = None, server_name: str | None = None) -> Streams:  # fmt: skip
    """Dial `ip:port` and, with `tls`, complete a verified TLS handshake for `server_name`."""
    where = f"{ip}:{port}" + (f" (through the egress proxy {socks.address})" if socks else "")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await dial(ip, port, socks)
    except TimeoutError:
        raise UpstreamError("upstream_timeout", f"connecting to {where} took over {CONNECT_TIMEOUT_S:g} s") from None
    except ConnectionRefusedError:
        raise UpstreamError("upstream_refused", f"{where} refused the connection") from None
    except OSError as exc:
        raise UpstreamError("upstream_unreachable", f"cannot connect to {where}: {exc.strerror or exc}") from None
    except Exception as exc:  # the SOCKS dialer's own errors
        raise UpstreamError("upstream_proxy_failed", f"cannot connect to {where}: {exc}") from None
    no_delay(writer.get_extra_info("socket"))
    if tls is None:
        return reader, writer
    try:
        await writer.start_tls(tls, server_hostname=server_name, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
    except ssl.SSLCertVerificationError as exc:
        abort(writer)
        raise UpstreamError("upstream_tls_verification_failed", f"the certificate of {where} is not valid for "
                            f"{server_name}: {exc.verify_message}") from None  # fmt: skip
    except ssl.SSLError as exc:
        abort(writer)
        raise UpstreamError("upstream_tls_failed", f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except (TimeoutError, OSError) as exc:
        abort(writer)
        raise UpstreamError("upstream_tls_failed", f"TLS handshake with {where} failed: "
                            f"{'timed out' if isinstance(exc, TimeoutError) else exc}") from None  # fmt: skip
    return reader, writer


class Upstream:
    """One client connection's upstream: connected on first use (or early, with
    `start`), reused while it stays open, connected again after it closed."""

    def __init__(self, open_streams: Callable[[], Awaitable[Streams]]) -> None:
        self._open = open_streams
        self._pending: asyncio.Task[Streams] | None = None
        self.streams: Streams | None = None

    def start(self) -> None:
        """Begin connecting now (e.g. while the sandbox side's TLS handshake runs)."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._open())

    async def get(self) -> tuple[Streams, bool]:
        """Open streams and whether they are a new connection; raises UpstreamError."""
        if self.streams is not None:
            reader, writer = self.streams
            if not reader.at_eof() and not writer.is_closing():
                return self.streams, False
            self.drop()
        self.start()
        assert self._pending is not None
        try:
            self.streams = await self._pending
        finally:
            self._pending = None
        return self.streams, True

    def drop(self) -> None:
        """Abandon the current connection (it cannot carry another request)."""
        if self.streams is not None:
            abort(self.streams[1])
            self.streams = None

    async def close(self) -> None:
        self.drop()
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                abort(pending.result()[1])
            await finish(pending)
