"""Sending for the blocking client: one :class:`~cloche.client._api.Call` over ``httpx.Client``.

:class:`Sender` is what every resource of the blocking face holds: it sends a call,
streams bodies up and down, decodes event streams and drives the shared flows of
:mod:`cloche.client._flows`.  Nothing here knows an endpoint; request building and error
mapping are :class:`~cloche.client._base.BaseClient`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, TypeVar

import httpx

from cloche.tlsdefault import default_tls

from .. import _api, _flows
from .._base import CHUNK_SIZE, DEFAULT_TIMEOUT, BaseClient, ProgressCallback, memory_chunks, read_chunk
from .._sse import ExecEventDecoder
from ..errors import ClocheError
from ..models import ExecEvent

T = TypeVar("T")


def _iter_body(body: bytes | IO[bytes], on_progress: ProgressCallback | None) -> Iterator[bytes]:
    """Yield ``body`` in chunks, reporting each one to ``on_progress``."""
    chunks = (
        memory_chunks(body) if isinstance(body, bytes | bytearray | memoryview) else iter(lambda: read_chunk(body), b"")
    )
    for chunk in chunks:
        yield chunk
        if on_progress:
            on_progress(len(chunk))


class Sender(BaseClient):
    """The blocking transport under :class:`~cloche.Client` and its resources."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(
            base_url=self.url, headers=self._default_headers(), timeout=timeout, transport=transport,
            verify=default_tls(),
        )

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def _open(self, call: _api.Call[Any], on_progress: ProgressCallback | None = None) -> httpx.Response:
        """Send ``call`` and return the streaming response once its status is OK."""
        content = None if call.content is None else _iter_body(call.content, on_progress)
        request = self._http.build_request(**self._request_args(call, content))
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        try:
            if self._is_error(call, response):
                response.read()
                self._check_status(call, response)
            if call.precheck is not None:
                call.precheck(response)
        except httpx.TransportError as exc:  # the error body broke off
            response.close()
            raise self._transport_error(exc) from exc
        except BaseException:
            response.close()
            raise
        return response

    def _call(self, call: _api.Call[T], on_progress: ProgressCallback | None = None) -> T:
        """Send ``call``, read the whole response and parse it."""
        response = self._open(call, on_progress)
        try:
            response.read()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()
        return self._parse(call, response)

    def _run(self, flow: _flows.Flow[T]) -> T:
        """Drive a shared flow: send each call it yields, hand it the result or the error."""
        try:
            call = next(flow)
            while True:
                try:
                    result = self._call(call)
                except ClocheError as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(result)
        except StopIteration as stop:
            return stop.value

    def _iterate(self, stream: _flows.Stream[T]) -> Iterator[T]:
        """Drive a shared stream: send the calls it yields, yield the items it hands out."""
        reply: Any = None
        while True:
            try:
                step = stream.send(reply)
            except StopIteration:
                return
            if isinstance(step, _flows.Items):
                yield from step.values
                reply = None
            else:
                reply = self._call(step)

    def _download(self, call: _api.Call[Any], dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the response body of ``call`` into ``dest``; return the byte count."""
        total = 0
        response = self._open(call)
        try:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                dest.write(chunk)
                total += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()
        return total

    def _events(self, call: _api.Call[Any]) -> Iterator[ExecEvent]:
        """Send an ``exec/stream`` call and yield its decoded events."""
        response = self._open(call)
        decoder = ExecEventDecoder()
        try:
            for line in response.iter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
            if (event := decoder.flush()) is not None:
                yield event
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()
