"""Error mapping of the SDK: HTTP status + error code -> typed exception.

The server is faked with httpx.MockTransport here only because this is a pure mapping
table; everything else the SDK does is tested against a real server in
tests/integration/test_sdk.py.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from cloche import (
    AsyncClient,
    Client,
    ClocheError,
    Conflict,
    ConnectionFailed,
    DiskFull,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)
from cloche.client.errors import error_from_response, parse_retry_after

CASES = [
    (400, "invalid_request", InvalidRequest),
    (422, "validation_error", InvalidRequest),
    (401, "unauthorized", Unauthorized),
    (403, "forbidden", Forbidden),
    (404, "not_found", NotFound),
    (409, "conflict", Conflict),
    (409, "invalid_state", InvalidState),
    (413, "too_large", PayloadTooLarge),
    (429, "quota_exceeded", QuotaExceeded),
    (429, "rate_limited", RateLimited),
    (500, "internal", ServerError),
    (503, "unavailable", Unavailable),
    (507, "disk_full", DiskFull),
    (418, "teapot", ClocheError),
]


def _client_answering(status: int, body: bytes, headers: dict[str, str] | None = None) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers or {})

    return Client("http://cloche.test", "key", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "code", "cls"), CASES)
def test_status_and_code_map_to_exception(status, code, cls):
    body = f'{{"error": {{"code": "{code}", "message": "it went wrong"}}}}'.encode()
    with (
        _client_answering(status, body, {"content-type": "application/json"}) as client,
        pytest.raises(cls) as info,
    ):
        client.sandboxes.get("sb-1")
    err = info.value
    assert type(err) is cls
    assert (err.status, err.code, err.message) == (status, code, "it went wrong")
    assert "it went wrong" in str(err)


def test_subclass_hierarchy_allows_broad_catches():
    assert issubclass(InvalidState, Conflict)
    assert issubclass(Unavailable, ServerError) and issubclass(DiskFull, ServerError)
    for _, _, cls in CASES:
        assert issubclass(cls, ClocheError)
    assert issubclass(ConnectionFailed, ClocheError)


def test_rate_limited_carries_retry_after():
    body = b'{"error": {"code": "rate_limited", "message": "slow down"}}'
    with (
        _client_answering(429, body, {"Retry-After": "7"}) as client,
        pytest.raises(RateLimited) as info,
    ):
        client.sandboxes.list()
    assert info.value.retry_after == 7.0


def test_quota_exceeded_is_not_rate_limited():
    err = error_from_response(429, b'{"error": {"code": "quota_exceeded", "message": "m"}}', {})
    assert isinstance(err, QuotaExceeded) and not isinstance(err, RateLimited)


@pytest.mark.parametrize(("value", "expected"), [("3", 3.0), (" 1.5 ", 1.5), (None, None),
                                                 ("", None), ("Wed, 21 Oct 2015", None)])  # fmt: skip
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_non_json_error_body_still_maps_by_status():
    with (
        _client_answering(502, b"<html>Bad Gateway</html>") as client,
        pytest.raises(ServerError) as info,
    ):
        client.health()
    assert info.value.status == 502 and "Bad Gateway" in info.value.message


def test_empty_error_body_uses_reason_phrase():
    err = error_from_response(404, b"", {})
    assert isinstance(err, NotFound) and err.code == "not_found" and err.message == "Not Found"


def test_async_client_maps_errors_the_same_way():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "bad key"}})

    async def go() -> None:
        async with AsyncClient("http://cloche.test", "k",
                               transport=httpx.MockTransport(handler)) as client:  # fmt: skip
            await client.sandboxes.list()

    with pytest.raises(Unauthorized, match="bad key"):
        asyncio.run(go())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_raises_connection_failed():
    with (
        Client(f"http://127.0.0.1:{_closed_port()}", "k", timeout=5) as client,
        pytest.raises(ConnectionFailed) as info,
    ):
        client.health()
    assert info.value.status == 0 and "127.0.0.1" in info.value.message


def test_unreachable_server_raises_connection_failed_async():
    async def go() -> None:
        async with AsyncClient(f"http://127.0.0.1:{_closed_port()}", "k", timeout=5) as client:
            await client.health()

    with pytest.raises(ConnectionFailed):
        asyncio.run(go())
