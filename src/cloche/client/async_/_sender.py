"""Sending for the asyncio client: one :class:`~cloche.client._api.Call` over ``httpx.AsyncClient``.

:class:`AsyncSender` is what every resource of the async face holds: it sends a call,
streams bodies up and down, decodes event streams and drives the shared flows of
:mod:`cloche.client._flows`.  Nothing here knows an endpoint; request building and error
mapping are :class:`~cloche.client._base.BaseClient`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO, Any, TypeVar

import httpx

from cloche.tlsdefault import default_tls

from .. import _api, _flows
from .._base import CHUNK_SIZE, DEFAULT_TIMEOUT, BaseClient, ProgressCallback, memory_chunks, read_chunk
from .._sse import ExecEventDecoder
from ..errors import ClocheError
from ..models import ExecEvent

T = TypeVar("T")


async def _aiter_body(body: bytes | IO[bytes], on_progress: ProgressCallback | None) -> AsyncIterator[bytes]:
    """Yield ``body`` in chunks (file reads run in a worker thread), reporting progress."""
    if isinstance(body, bytes | bytearray | memoryview):
        for chunk in memory_chunks(body):
            yield chunk
            if on_progress:
                on_progress(len(chunk))
        return
    while chunk := await asyncio.to_thread(read_chunk, body):
        yield chunk
        if on_progress:
            on_progress(len(chunk))


class AsyncSender(BaseClient):
    """The asyncio transport under :class:`~cloche.AsyncClient` and its resources."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._default_headers(), timeout=timeout, transport=transport,
            verify=default_tls(),
        )

    async def close(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def _open(self, call: _api.Call[Any], on_progress: ProgressCallback | None = None) -> httpx.Response:
        """Send ``call`` and return the streaming response once its status is OK."""
        content = None if call.content is None else _aiter_body(call.content, on_progress)
        request = self._http.build_request(**self._request_args(call, content))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        try:
            if self._is_error(call, response):
                await response.aread()
                self._check_status(call, response)
            if call.precheck is not None:
                call.precheck(response)
        except httpx.TransportError as exc:  # the error body broke off
            await response.aclose()
            raise self._transport_error(exc) from exc
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _call(self, call: _api.Call[T], on_progress: ProgressCallback | None = None) -> T:
        """Send ``call``, read the whole response and parse it."""
        response = await self._open(call, on_progress)
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        return self._parse(call, response)

    async def _run(self, flow: _flows.Flow[T]) -> T:
        """Drive a shared flow: send each call it yields, hand it the result or the error."""
        try:
            call = next(flow)
            while True:
                try:
                    result = await self._call(call)
                except ClocheError as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(result)
        except StopIteration as stop:
            return stop.value

    async def _iterate(self, stream: _flows.Stream[T]) -> AsyncIterator[T]:
        """Drive a shared stream: send the calls it yields, yield the items it hands out."""
        reply: Any = None
        while True:
            try:
                step = stream.send(reply)
            except StopIteration:
                return
            if isinstance(step, _flows.Items):
                for value in step.values:
                    yield value
                reply = None
            else:
                reply = await self._call(step)

    async def _download(
        self, call: _api.Call[Any], dest: IO[bytes], on_progress: ProgressCallback | None = None
    ) -> int:
        """Stream the response body of ``call`` into ``dest``; return the byte count."""
        total = 0
        response = await self._open(call)
        try:
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                await asyncio.to_thread(dest.write, chunk)
                total += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        return total

    async def _events(self, call: _api.Call[Any]) -> AsyncIterator[ExecEvent]:
        """Send an ``exec/stream`` call and yield its decoded events."""
        response = await self._open(call)
        decoder = ExecEventDecoder()
        try:
            async for line in response.aiter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
            if (event := decoder.flush()) is not None:
                yield event
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
