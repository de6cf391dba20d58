"""Typed exceptions raised by the Cloche SDK.

Every failed API call raises a subclass of :class:`ClocheError`.  The server answers
errors as ``{"error": {"code": "...", "message": "..."}}``; :func:`error_from_response`
turns such a response into the most specific exception class, chosen by HTTP status and,
where one status carries several meanings (409, 429, 5xx), by the error code.

Transport failures (connection refused, DNS, timeouts) raise :class:`ConnectionFailed`,
so callers can catch ``ClocheError`` alone and still see every failure mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

__all__ = [
    "AgentError",
    "ClocheError",
    "Conflict",
    "ConnectionFailed",
    "DiskFull",
    "Forbidden",
    "InvalidRequest",
    "InvalidState",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
    "parse_retry_after",
    "status_for_code",
]


class ClocheError(Exception):
    """Base class for every error the SDK raises.

    Attributes:
        status: HTTP status of the failed response, or ``0`` when no response arrived.
        code: Machine-readable error code from the server (e.g. ``"not_found"``).
        message: Human-readable explanation from the server.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class InvalidRequest(ClocheError):
    """The request was malformed or failed validation (HTTP 400 or 422)."""


class Unauthorized(ClocheError):
    """The API key is missing, malformed, unknown or revoked (HTTP 401)."""


class Forbidden(ClocheError):
    """The API key is valid but may not perform this operation (HTTP 403)."""


class NotFound(ClocheError):
    """The sandbox, file, tenant or key does not exist, or is not yours (HTTP 404)."""


class Conflict(ClocheError):
    """The request conflicts with the current state of a resource (HTTP 409)."""


class InvalidState(Conflict):
    """The sandbox is in the wrong state for the operation, e.g. exec on a paused one."""


class PreconditionFailed(ClocheError):
    """A conditional state write lost: ``If-Match`` / ``If-None-Match`` did not hold (HTTP 412).

    Attributes:
        key: The key whose condition failed.
        current_version: Its version now (``None``: the key does not exist).
        index: For an atomic batch, the position of the failing operation.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        key: str | None = None,
        current_version: int | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.key = key
        self.current_version = current_version
        self.index = index


class PayloadTooLarge(ClocheError):
    """The request body or the requested output exceeds a server limit (HTTP 413)."""


class QuotaExceeded(ClocheError):
    """A tenant quota (sandboxes, CPU, memory) would be exceeded (HTTP 429).

    Attributes:
        retry_after: Seconds the server suggested waiting, if it sent ``Retry-After``.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class RateLimited(ClocheError):
    """Too many requests; retry after :attr:`retry_after` seconds (HTTP 429).

    Attributes:
        retry_after: Seconds the server asked the client to wait, if it said.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class AgentError(ClocheError):
    """An agent answered an invocation with a non-2xx status (``raise_for_status()``).

    ``status`` is the agent's status; ``message`` the start of its body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "agent_error", message or f"the agent answered HTTP {status}")


class ServerError(ClocheError):
    """The server failed to handle the request (any HTTP 5xx)."""


class Unavailable(ServerError):
    """The service or the sandbox's node is temporarily unavailable (HTTP 503).

    A create that waited ``wait_s`` in the admission queue without finding room ends so.

    Attributes:
        retry_after: Seconds the server suggested waiting, if it sent ``Retry-After``.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class DiskFull(ServerError):
    """The sandbox's disk quota or the node's disk is full (HTTP 507)."""


class ConnectionFailed(ClocheError):
    """The server could not be reached, or the connection broke mid-request."""

    def __init__(self, message: str, code: str = "connection_failed") -> None:
        super().__init__(0, code, message)


class RequestTimeout(ConnectionFailed):
    """The server did not answer within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="timeout")


_BY_STATUS: dict[int, type[ClocheError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    503: Unavailable,
    507: DiskFull,
}


_DEFAULT_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
    507: "disk_full",
}
"""The code assumed for an error response whose body does not name one."""

_STATUS_OF_CODE: dict[str, int] = {
    **{code: status for status, code in _DEFAULT_CODES.items()},
    "invalid_spec": 400,
    "invalid_state": 409,
    "not_empty": 409,
    "quota_exceeded": 429,
}


def status_for_code(code: str) -> int:
    """The HTTP status that an error code normally comes with (500 if unknown).

    Used for errors that arrive without a status, e.g. inside an event stream.
    """
    return _STATUS_OF_CODE.get(code, 500)


def parse_retry_after(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header given in seconds; ``None`` if absent or unparsable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def _decode_body(content: bytes) -> tuple[str | None, str | None]:
    """Extract ``(code, message)`` from an error body, tolerating non-JSON bodies."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            return (
                str(code) if code is not None else None,
                str(message) if message is not None else None,
            )
        detail = body.get("detail")  # a bare framework error that escaped the handlers
        if detail is not None:
            return None, detail if isinstance(detail, str) else json.dumps(detail)
    return None, None


def _error_fields(content: bytes) -> dict[str, object]:
    """The whole ``error`` object of an error body (empty if there is none)."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_from_response(
    status: int, content: bytes, headers: Mapping[str, str] | httpx.Headers | None = None
) -> ClocheError:
    """Build the exception for a failed response from its status, body and headers.

    Args:
        status: The HTTP status code (expected to be >= 400).
        content: The raw response body.
        headers: The response headers (only ``Retry-After`` is consulted).

    Returns:
        The most specific :class:`ClocheError` subclass for the response.
    """
    code, message = _decode_body(content)
    if message is None:
        text = content.decode("utf-8", "replace").strip()
        message = text[:500] if text else httpx.codes.get_reason_phrase(status) or "error"
    if code is None:
        code = _DEFAULT_CODES.get(status, f"http_{status}")
    retry_after = parse_retry_after(httpx.Headers(headers or {}).get("retry-after"))
    if status == 429:
        cls429 = QuotaExceeded if code == "quota_exceeded" else RateLimited
        return cls429(status, code, message, retry_after)
    if status == 503:
        return Unavailable(status, code, message, retry_after)
    if status == 409 and code == "invalid_state":
        return InvalidState(status, code, message)
    if status == 412:
        extra = _error_fields(content)
        return PreconditionFailed(
            status,
            code,
            message,
            key=extra.get("key") if isinstance(extra.get("key"), str) else None,
            current_version=_int_or_none(extra.get("current_version")),
            index=_int_or_none(extra.get("index")),
        )
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ClocheError
    return cls(status, code, message)


def raise_for_response(response: httpx.Response) -> None:
    """Raise the mapped :class:`ClocheError` if ``response`` is an error (status >= 400).

    The response body must already have been read.
    """
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content, response.headers)


def from_transport_error(exc: httpx.TransportError, url: str) -> ConnectionFailed:
    """Wrap an httpx transport exception as :class:`ConnectionFailed`/:class:`RequestTimeout`."""
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"timed out talking to {url}: {exc or type(exc).__name__}")
    return ConnectionFailed(f"cannot reach {url}: {exc or type(exc).__name__}")
