"""The Connect RPC protocol (https://connectrpc.com/docs/protocol), JSON codec only,
as much of it as envd's clients use: unary calls (`application/json` bodies, errors as
`{"code", "message"}` with the matching HTTP status), server streams and client streams
(`application/connect+json`: 5-byte envelopes, a final end-stream envelope with flag
0x02 carrying the error if any; a streaming response is always HTTP 200, even when the
call fails before its first message, since clients such as connect-web map a streaming
call's non-200 status alone and drop its body). Messages are plain dicts in protobuf's JSON mapping
(camelCase names, int64 as strings, bytes as base64, enums by name)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

STREAM_TYPE = "application/connect+json"
UNARY_TYPE = "application/json"
HEADER = struct.Struct(">BI")
MAX_MESSAGE = 16 << 20
FLAG_END = 0x02
FLAG_COMPRESSED = 0x01
STREAM_HEADERS = {"Cache-Control": "no-cache"}

HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429,
    "failed_precondition": 400, "aborted": 409, "out_of_range": 400, "unimplemented": 501,
    "internal": 500, "unavailable": 503, "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip

Message = dict[str, Any]


class ConnectError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def envelope(message: Message, flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(flags, len(data)) + data


def end_stream(error: ConnectError | None = None) -> bytes:
    return envelope({"error": error.to_dict()} if error else {}, FLAG_END)


class EnvelopeReader:
    """Splits a streamed request body into messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER.size:
            flags, length = HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE:
                raise ConnectError("resource_exhausted", f"message larger than {MAX_MESSAGE} bytes")
            if len(self._buf) < HEADER.size + length:
                break
            raw = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            if flags & FLAG_COMPRESSED:
                raise ConnectError("unimplemented", "compressed messages are not supported")
            if flags & FLAG_END:
                continue
            out.append(_decode(raw))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _decode(raw: bytes) -> Message:
    try:
        message = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ConnectError("invalid_argument", f"malformed JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise ConnectError("invalid_argument", "a message must be a JSON object")
    return message


def error_response(error: ConnectError) -> JSONResponse:
    return JSONResponse(error.to_dict(), HTTP_STATUS.get(error.code, 500))


def _check_codec(request: Request, stream: bool) -> None:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    expected = STREAM_TYPE if stream else UNARY_TYPE
    if content_type and content_type != expected:
        raise ConnectError("unimplemented", f"content type {content_type!r} is not supported (only {expected})")
    if request.headers.get("connect-content-encoding", "identity") not in ("identity", ""):
        raise ConnectError("unimplemented", "compressed streams are not supported")


async def read_unary(request: Request) -> Message:
    _check_codec(request, stream=False)
    if request.headers.get("content-encoding", "identity") not in ("identity", ""):
        raise ConnectError("unimplemented", "compressed requests are not supported")
    return _decode(await request.body())


async def read_first(request: Request) -> Message:
    """The single request message of a server-streaming call."""
    _check_codec(request, stream=True)
    reader = EnvelopeReader()
    messages: list[Message] = []
    async for chunk in request.stream():
        messages += reader.feed(chunk)
    if len(messages) != 1:
        raise ConnectError("invalid_argument", f"expected one request message, got {len(messages)}")
    return messages[0]


async def iter_messages(request: Request) -> AsyncIterator[Message]:
    """The request messages of a client-streaming call, as they arrive."""
    _check_codec(request, stream=True)
    reader = EnvelopeReader()
    async for chunk in request.stream():
        for message in reader.feed(chunk):
            yield message


def timeout_s(request: Request) -> float | None:
    raw = request.headers.get("connect-timeout-ms", "")
    if raw.isdigit() and 0 < len(raw) <= 10:
        return int(raw) / 1000
    return None


def keepalive_s(request: Request) -> float:
    raw = request.headers.get("keepalive-ping-interval", "")
    try:
        return max(1.0, float(raw)) if raw else 50.0
    except ValueError:
        return 50.0


def _malformed(exc: Exception) -> ConnectError:
    return ConnectError("invalid_argument", f"malformed request: {exc}")


async def unary(call: Callable[[], Awaitable[Message]]) -> Response:
    try:
        result = await call()
    except ConnectError as exc:
        return error_response(exc)
    except (TypeError, ValueError, AttributeError) as exc:
        return error_response(_malformed(exc))
    return JSONResponse(result, media_type=UNARY_TYPE)


async def streaming(call: Callable[[], Awaitable[Response]]) -> Response:
    """A streaming call: `call` reads the request and returns the stream (`stream`);
    a ConnectError it raises first becomes a stream holding only the end-stream
    envelope with that error."""
    try:
        return await call()
    except ConnectError as exc:
        return stream_error(exc)
    except (TypeError, ValueError, AttributeError) as exc:
        return stream_error(_malformed(exc))


def stream(first: Message | None, messages: AsyncIterator[Message], keepalive: Message | None = None,
           interval: float = 50.0, on_close: Callable[[], Awaitable[None]] | None = None) -> Response:  # fmt: skip
    """A server-streaming response. `messages` may raise ConnectError to end the stream
    with that error; when it is idle for `interval` seconds, `keepalive` is sent."""

    async def body() -> AsyncIterator[bytes]:
        iterator = messages.__aiter__()
        try:
            if first is not None:
                yield envelope(first)
            while True:
                step = asyncio.ensure_future(iterator.__anext__())
                try:
                    while True:
                        done, _ = await asyncio.wait({step}, timeout=interval)
                        if done:
                            break
                        if keepalive is not None:
                            yield envelope(keepalive)
                    try:
                        message = step.result()
                    except StopAsyncIteration:
                        break
                finally:
                    if not step.done():
                        step.cancel()
                        with contextlib.suppress(BaseException):
                            await step
                yield envelope(message)
            yield end_stream()
        except ConnectError as exc:
            yield end_stream(exc)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()
            if on_close is not None:
                await on_close()

    return StreamingResponse(body(), media_type=STREAM_TYPE, headers=STREAM_HEADERS)


def stream_error(error: ConnectError) -> Response:
    """A streaming call that fails before its first message: HTTP 200 and the
    end-stream envelope carrying the error, as the protocol has it."""
    return Response(end_stream(error), media_type=STREAM_TYPE, headers=STREAM_HEADERS)
