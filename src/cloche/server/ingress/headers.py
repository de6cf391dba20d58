"""Which request and response headers cross the proxy, and which it sets itself.

Hop-by-hop headers and the framing are redone on each side; cloche's credentials are
dropped; Host and X-Forwarded-* are ours. Shared by the HTTP and WebSocket relays.
"""

from __future__ import annotations

from starlette.types import Scope

from cloche.server.ingress.credentials import COOKIE, TOKEN_HEADERS, Access, strip_cookie
from cloche.server.ingress.targets import Target, secure

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"proxy-authenticate", b"proxy-authorization"})  # fmt: skip
# never forwarded: cloche's credentials, the framing we redo, the headers we set ourselves
REQUEST_DROP = HOP_BY_HOP | TOKEN_HEADERS | {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-host",
                                             b"x-forwarded-proto", b"x-forwarded-prefix"}  # fmt: skip
WEBSOCKET_DROP = REQUEST_DROP | {b"content-length", b"sec-websocket-key", b"sec-websocket-version",
                                 b"sec-websocket-extensions", b"sec-websocket-protocol",
                                 b"sec-websocket-accept"}  # fmt: skip
RESPONSE_DROP = HOP_BY_HOP | {b"date"}  # the server adds its own Date


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection (hop-by-hop by declaration), and `close`."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_headers(scope: Scope, target: Target, access: Access, host: bytes | None,
                     drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """The client's headers minus hop-by-hop ones and cloche's credentials, plus Host
    and X-Forwarded-* (ours replace any the client sent)."""
    headers = scope["headers"]
    listed = connection_tokens(headers)
    out = [(b"host", host)] if host else []
    original_host = None
    for name, value in headers:
        if name in drop or name in listed:
            if name == b"host":
                original_host = value
            continue
        if name == b"authorization" and access.strip_authorization:
            continue
        if name == b"cookie" and COOKIE in value:
            value = strip_cookie(value)
            if not value:
                continue
        out.append((name, value))
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode()))
    out.append((b"x-forwarded-proto", b"https" if secure(scope) else b"http"))
    if original_host:
        out.append((b"x-forwarded-host", original_host))
    if target.by_path:
        out.append((b"x-forwarded-prefix", target.prefix.encode()))
    return out
