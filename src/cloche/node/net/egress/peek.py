"""Which host a connection is for, read from what the client sends first, without consuming it.

The proxy decides per connection whether to intercept (the host has transforms) or to
splice the bytes through untouched, and a spliced connection must reach upstream
exactly as the client sent it. So the first bytes are only peeked (MSG_PEEK) on the raw
socket: for TLS, the server name (SNI) of the ClientHello; for plain HTTP, the Host
header of the first request head. Both parsers are small and strict, bounded in size
and time; anything they do not recognise reads as "no host", which means splice.

Waiting for more bytes uses SO_RCVLOWAT: the socket turns readable only once the number
of bytes the parser still needs has arrived (or the peer closed), so a ClientHello split
over several segments costs one wake-up per step, not a busy loop.
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
from collections.abc import Callable

MAX_HELLO = 16384 + 4  # a ClientHello's handshake message, header included
MAX_TLS_BYTES = 2 * (MAX_HELLO + 5 * 4)  # records carrying it (a few fragments at most)
MAX_HEAD = 16384  # the first HTTP request head
PEEK_TIMEOUT_S = 5.0
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Incomplete(Exception):
    """The parser needs at least `need` bytes (counted from the start) to decide."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


class _NotOurs(Exception):
    """The bytes are not what the parser reads (not a ClientHello, not an HTTP request)."""


def host_name(text: str) -> str | None:
    """`text` as a lower-case host name without a trailing dot, or None if it is not one."""
    name = text.lower().rstrip(".")
    return name if _HOST_NAME.match(name) else None


# ---- TLS ClientHello --------------------------------------------------------------------


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _NotOurs("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.int(length_bytes))


def _handshake_message(data: bytes) -> bytes:
    """The ClientHello body, reassembled from the handshake records at the start of `data`."""
    message = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            raise Incomplete(pos + 5)
        content_type, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5], "big")
        if content_type != 22 or major != 3 or not 0 < length <= 16384 or pos + 5 + length > MAX_TLS_BYTES:
            raise _NotOurs("not a TLS handshake record")
        end = pos + 5 + length
        if len(data) < end:
            raise Incomplete(end)
        message += data[pos + 5 : end]
        pos = end
        if len(message) >= 4:
            total = 4 + int.from_bytes(message[1:4], "big")
            if message[0] != 1 or total > MAX_HELLO:
                raise _NotOurs("not a ClientHello")
            if len(message) >= total:
                return bytes(message[4:total])


def sni_of(data: bytes) -> str | None:
    """The server name a TLS ClientHello at the start of `data` asks for (None: it names
    none, or `data` is not a ClientHello). Raises Incomplete when more bytes are needed."""
    try:
        hello = _Cursor(_handshake_message(data))
        hello.take(2 + 32)  # legacy_version, random
        if len(hello.vector(1)) > 32:  # legacy_session_id
            return None
        suites = hello.vector(2)
        if not suites or len(suites) % 2:
            return None
        hello.vector(1)  # legacy_compression_methods
        if hello.pos == len(hello.data):
            return None  # no extensions
        extensions = _Cursor(hello.vector(2))
        while extensions.pos < len(extensions.data):
            kind, body = extensions.int(2), extensions.vector(2)
            if kind == 0:  # server_name
                return _server_name(_Cursor(body))
    except _NotOurs:
        return None
    return None


def _server_name(ext: _Cursor) -> str | None:
    names = _Cursor(ext.vector(2))
    while names.pos < len(names.data):
        kind, name = names.int(1), names.vector(2)
        if kind == 0:  # host_name
            try:
                return host_name(name.decode("ascii"))
            except UnicodeDecodeError:
                return None
    return None


# ---- HTTP request head --------------------------------------------------------------------


def host_of(data: bytes) -> str | None:
    """The Host header (port removed) of the HTTP/1.x request head at the start of `data`
    (None: no Host, or not an HTTP request). Raises Incomplete when more bytes are needed."""
    end = data.find(b"\r\n\r\n")
    first = data.split(b"\r\n", 1)[0]
    method = first.split(b" ", 1)[0]
    if method and not _TOKEN.match(method[:16]) or (b" " not in first and len(first) > 16):
        return None  # not a request line (e.g. TLS on an HTTP port)
    if end < 0:
        if len(data) >= MAX_HEAD:
            return None
        raise Incomplete(len(data) + 1)
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.lower() == b"host":
            return host_from_header(value.decode("latin-1"))
    return None


def host_from_header(value: str) -> str | None:
    """A Host header's host name: port removed, lower case (None for an IP literal in
    brackets or anything that is not a host name)."""
    host = value.strip()
    if host.startswith("["):
        return None
    return host_name(host.rsplit(":", 1)[0] if ":" in host else host)


# ---- peeking on the socket ----------------------------------------------------------------


async def peek_sni(sock: socket.socket, timeout: float = PEEK_TIMEOUT_S) -> str | None:
    """The SNI of the ClientHello the client is sending on `sock`, left unread."""
    return await _peek(sock, sni_of, MAX_TLS_BYTES, timeout)


async def peek_host(sock: socket.socket, timeout: float = PEEK_TIMEOUT_S) -> str | None:
    """The Host of the first HTTP request the client is sending on `sock`, left unread."""
    return await _peek(sock, host_of, MAX_HEAD, timeout)


async def _peek(sock: socket.socket, parse: Callable[[bytes], str | None], limit: int, timeout: float) -> str | None:
    """Peek until `parse` decides; None when it cannot (the peer stopped sending, closed
    or took longer than `timeout`)."""
    need, seen = 1, -1
    try:
        async with asyncio.timeout(timeout):
            while True:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, need)
                await _readable(sock)
                data = sock.recv(limit, socket.MSG_PEEK)
                try:
                    return parse(data)
                except Incomplete as more:
                    need = min(more.need, limit)
                if len(data) == seen and _peer_closed(sock):
                    return None
                if len(data) == seen:  # readable without new bytes (memory pressure): do not spin
                    await asyncio.sleep(0.005)
                seen = len(data)
    except (TimeoutError, OSError):
        return None
    finally:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        except OSError:
            pass


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _peer_closed(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))
