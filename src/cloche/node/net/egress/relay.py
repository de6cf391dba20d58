"""The HTTP/1.1 relay of an intercepted connection: where requests get their secrets.

Both sides are parsed with h11 (the sandbox side as a server, the upstream side as a
client) and bodies stream through in both directions as they arrive, with the writer's
backpressure, never buffered whole. Connections stay open for many requests (and the
upstream one is connected again when it closed between two requests). Per request:

- its host is the Host header without the port; on an intercepted TLS connection it
  must be the SNI name the node's certificate was made for, otherwise `421`;
- if that host has transforms and the sandbox's own lookups resolved it to the
  connection's original address, every transform is applied in order (transform.py);
  a secret the sandbox may not use answers `403 secret_denied` and the request is not
  forwarded; otherwise the request goes up untouched;
- CONNECT and protocol upgrades (WebSocket, h2c) are refused with `501`: the relay
  speaks HTTP/1.1 request/response only, and splicing an upgraded stream would carry
  the sandbox's traffic past the per-request checks;
- an upstream that cannot be reached, fails TLS verification, resets or breaks the
  protocol answers `502` naming the cause, if no response has started yet (otherwise
  the connection is cut).

Errors the relay answers itself are JSON `{"error": {"code", "message"}}` and close the
connection. Header values are never logged: they may hold secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import h11

from cloche.node.net.egress.context import ConnectionContext, SecretDenied, SecretLookup
from cloche.node.net.egress.peek import host_from_header
from cloche.node.net.egress.streams import READ_SIZE, Streams, finish
from cloche.node.net.egress.transform import Header, apply_transforms
from cloche.node.net.egress.upstream import Upstream, UpstreamError

log = logging.getLogger("cloche.egress")

MAX_HEAD = 65536  # request or response head (h11's default is 16 KiB)
LINGER_S = 1.0  # after an error answer, read (and drop) what the client still sends, so it sees the answer
LINGER_BYTES = 1 << 20
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection"}
_IDEMPOTENT = {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]


class _Refused(Exception):
    """The relay answers this request itself (status, JSON error) and closes."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _ClientGone(Exception):
    """The sandbox side closed, reset or broke the protocol: nothing to answer."""


def _failed(task: asyncio.Task[None] | None) -> bool:
    return task is not None and task.done() and not task.cancelled() and task.exception() is not None


class Relay:
    def __init__(self, client: Streams, upstream: Upstream, *, ctx: ConnectionContext, secrets: SecretLookup,
                 dst_ip: str, sni: str | None, counters: Counter[str]) -> None:  # fmt: skip
        self._reader, self._writer = client
        self._upstream = upstream
        self._ctx, self._secrets, self._dst_ip, self._sni = ctx, secrets, dst_ip, sni
        self._counters = counters
        self._client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._up = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._up_streams: Streams | None = None

    async def run(self) -> None:
        """Serve requests until either side closes or a request is refused."""
        try:
            while await self._serve_one():
                self._client.start_next_cycle()
        except _ClientGone:
            return
        except h11.LocalProtocolError:  # a response the client's side of HTTP cannot carry
            log.info("egress %s: cannot relay a response from %s", self._ctx.sandbox_id, self._dst_ip)
        except _Refused as refused:
            await self._answer(refused)
        except UpstreamError as exc:
            self._counters["upstream_errors"] += 1
            log.info("egress %s: upstream error for %s: %s", self._ctx.sandbox_id, self._dst_ip, exc.message)
            await self._answer(_Refused(502, exc.code, exc.message))

    # ---- one request ------------------------------------------------------------------

    async def _serve_one(self) -> bool:
        """Relay one request and its response; whether the connection can serve another."""
        request = await self._client_event()
        if not isinstance(request, h11.Request):
            return False
        try:
            outgoing = h11.Request(method=request.method, target=request.target, headers=self._request_headers(request))
        except h11.LocalProtocolError:  # (its text may quote a header value: never repeated)
            raise _Refused(400, "bad_request", "the request cannot be forwarded as HTTP/1.1 "
                           "(it needs exactly one Host header)") from None  # fmt: skip
        try:
            first = self._client.next_event()  # without waiting: a body may come only after a 100 Continue
        except h11.RemoteProtocolError as exc:
            raise _ClientGone from exc
        # Without a body, an idempotent request can go again on a new connection when the
        # kept-alive one turns out to have been closed by the upstream meanwhile.
        retry = isinstance(first, h11.EndOfMessage) and request.method in _IDEMPOTENT
        while True:
            fresh = await self._connect_upstream()
            try:
                await self._exchange(outgoing, first)
                break
            except UpstreamError:
                if fresh or not retry or self._client.our_state is not h11.SEND_RESPONSE:
                    raise
                self._upstream.drop()
        if self._up.our_state is h11.DONE and self._up.their_state is h11.DONE:
            self._up.start_next_cycle()
        else:
            self._upstream.drop()
        return self._client.our_state is h11.DONE and self._client.their_state is h11.DONE

    async def _connect_upstream(self) -> bool:
        """Make sure there is an upstream connection; whether it is a new one."""
        streams, fresh = await self._upstream.get()
        if fresh:
            self._up = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
            self._up_streams = streams
        return fresh

    async def _exchange(self, request: h11.Request, first: _Event) -> None:
        """Send the request (its body streamed from the client), relay the response."""
        self._send_up(request)
        body: asyncio.Task[None] | None = None
        if isinstance(first, h11.EndOfMessage):
            self._send_up(first)
        else:
            body = asyncio.ensure_future(self._forward_body(first))
        try:
            await self._forward_response(body)
        finally:
            if body is not None:
                await finish(body)

    def _request_headers(self, request: h11.Request) -> list[Header]:
        """The headers to send upstream, transformed if this request's host calls for it."""
        sent = request.headers.raw_items()
        if request.method == b"CONNECT" or any(n.lower() == b"upgrade" for n, _ in sent):
            raise _Refused(
                501,
                "upgrade_not_supported",
                "the egress proxy relays plain HTTP/1.1 requests to "
                "hosts with transforms; CONNECT and protocol upgrades (WebSocket, h2c) are not supported",
            )
        host_value = next((v for n, v in sent if n.lower() == b"host"), None)
        host = host_from_header(host_value.decode("latin-1")) if host_value is not None else None
        if self._sni is not None and host != self._sni:
            raise _Refused(421, "misdirected_request", f"this TLS connection is for {self._sni}; "
                           f"send requests for {host or 'other hosts'} on a connection of their own")  # fmt: skip
        headers = [(n, v) for n, v in sent if n.lower() not in _HOP_BY_HOP]
        transforms = self._ctx.transforms_for(host) if host else ()
        if not host or not transforms or not self._ctx.resolved(host, self._dst_ip):
            return headers
        try:
            out = apply_transforms(headers, transforms, lambda name: self._secrets(self._ctx.sandbox_id, name, host))
        except SecretDenied as exc:
            self._counters["secret_denials"] += 1
            log.info("egress %s: request to %s refused: %s", self._ctx.sandbox_id, host, exc)
            raise _Refused(403, "secret_denied", str(exc)) from None
        self._counters["requests_transformed"] += 1
        return out

    async def _forward_body(self, event: _Event) -> None:
        """Copy the request body upstream; returns quietly when the upstream stops taking
        it (its response, or its failure, is the response pump's business)."""
        assert self._up_streams is not None
        up_writer = self._up_streams[1]
        try:
            while not isinstance(event, h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    up_writer.writelines(self._up.send_with_data_passthrough(event))
                    await up_writer.drain()
                elif event is not h11.NEED_DATA:
                    raise _ClientGone
                event = await self._client_event()
            self._send_up(event)
            await up_writer.drain()
        except (OSError, h11.LocalProtocolError):
            return

    async def _forward_response(self, body: asyncio.Task[None] | None) -> None:
        """Copy the upstream's response (and its 1xx) to the client, watching the body
        pump: if the client goes away mid-request, the exchange ends with it."""
        while True:
            event = await self._upstream_event(body)
            if isinstance(event, h11.InformationalResponse | h11.Response):
                headers = [(n, v) for n, v in event.headers.raw_items() if n.lower() not in _HOP_BY_HOP]
                kind = type(event)
                self._send_client(kind(status_code=event.status_code, headers=headers, reason=event.reason))
            elif isinstance(event, h11.Data):
                self._writer.writelines(self._client.send_with_data_passthrough(event))
                await self._client_drain()
            elif isinstance(event, h11.EndOfMessage):
                self._send_client(event)
                await self._client_drain()
                return
            else:
                raise UpstreamError("upstream_closed", f"{self._dst_ip} closed the connection mid-response")

    # ---- reading and writing ----------------------------------------------------------

    async def _client_event(self) -> _Event:
        try:
            while (event := self._client.next_event()) is h11.NEED_DATA:
                self._client.receive_data(await self._reader.read(READ_SIZE))
        except (OSError, h11.RemoteProtocolError) as exc:
            raise _ClientGone from exc
        return event

    async def _upstream_event(self, body: asyncio.Task[None] | None) -> _Event:
        assert self._up_streams is not None
        up_reader = self._up_streams[0]
        try:
            while (event := self._up.next_event()) is h11.NEED_DATA:
                self._up.receive_data(await self._read_upstream(up_reader, body))
        except h11.RemoteProtocolError as exc:
            raise UpstreamError("upstream_protocol_error", f"{self._dst_ip} broke HTTP/1.1: {exc}") from None
        except OSError as exc:
            raise UpstreamError("upstream_reset", f"connection to {self._dst_ip} failed: {exc}") from None
        return event

    @staticmethod
    async def _read_upstream(reader: asyncio.StreamReader, body: asyncio.Task[None] | None) -> bytes:
        """The upstream's next bytes, unless the client fails mid-request meanwhile (the
        body pump ended with an error): then the exchange ends."""
        if body is not None and not body.done():
            read = asyncio.ensure_future(reader.read(READ_SIZE))
            await asyncio.wait((read, body), return_when=asyncio.FIRST_COMPLETED)
            if not _failed(body):
                return await read
            await finish(read)
        if _failed(body):
            raise _ClientGone
        return await reader.read(READ_SIZE)

    def _send_up(self, event: h11.Event) -> None:
        assert self._up_streams is not None
        self._up_streams[1].write(self._up.send(event) or b"")

    def _send_client(self, event: h11.Event) -> None:
        self._writer.write(self._client.send(event) or b"")

    async def _client_drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as exc:
            raise _ClientGone from exc

    async def _answer(self, refused: _Refused) -> None:
        """Answer with the relay's own JSON error (if no response has started), then let
        the client read it before the connection closes."""
        if self._client.our_state is not h11.SEND_RESPONSE:
            return
        body = json.dumps({"error": {"code": refused.code, "message": refused.message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        try:
            for event in (h11.Response(status_code=refused.status, headers=headers), h11.Data(data=body),
                          h11.EndOfMessage()):  # fmt: skip
                self._send_client(event)
            await self._writer.drain()
            async with asyncio.timeout(LINGER_S):
                drained = 0
                while drained < LINGER_BYTES and (data := await self._reader.read(READ_SIZE)):
                    drained += len(data)
        except (OSError, TimeoutError, h11.LocalProtocolError):
            return
