"""``Unavailable`` (503) carries ``retry_after``; create's ``wait_s``/``region`` and
``resize`` build the request the server expects.

The server is faked with httpx.MockTransport because these are a mapping table and the
request shape; the behaviour itself is tested against a real server in
tests/integration/test_sdk_resize.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cloche import AsyncClient, Client, ServerError, Unavailable
from cloche.client import _api
from cloche.client._spec import SandboxSpec
from cloche.client.errors import error_from_response

FULL = b'{"error": {"code": "unavailable", "message": "no room on node n1 within 2s"}}'

SANDBOX = {"id": "sb-1", "state": "running", "cpu": 1, "memory_mb": 512, "placement": {"node": "n1", "score": 0.7}}


def _answering(status: int, body: bytes, headers: dict[str, str], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers=headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("header", "expected"), [("12", 12.0), ("0.5", 0.5), (None, None), ("soon", None)])
def test_unavailable_parses_retry_after(header, expected):
    headers = {"Retry-After": header} if header is not None else {}
    err = error_from_response(503, FULL, headers)
    assert type(err) is Unavailable and isinstance(err, ServerError)
    assert (err.status, err.code, err.retry_after) == (503, "unavailable", expected)


def test_unavailable_without_a_body_still_has_retry_after():
    err = error_from_response(503, b"", {"retry-after": "3"})
    assert isinstance(err, Unavailable) and err.code == "unavailable" and err.retry_after == 3.0


def test_create_raises_unavailable_with_retry_after_and_sends_wait_and_region():
    seen: list[httpx.Request] = []
    transport = _answering(503, FULL, {"Retry-After": "4", "content-type": "application/json"}, seen)
    with Client("http://cloche.test", "k", transport=transport) as client, pytest.raises(Unavailable) as info:
        client.sandboxes.create(wait_s=2, region="eu-west")
    assert info.value.retry_after == 4.0
    assert json.loads(seen[0].content) == {"wait_s": 2, "region": "eu-west"}


def test_async_create_raises_unavailable_with_retry_after():
    seen: list[httpx.Request] = []
    transport = _answering(503, FULL, {"Retry-After": "9"}, seen)

    async def go() -> None:
        async with AsyncClient("http://cloche.test", "k", transport=transport) as client:
            await client.sandboxes.create(wait_s=0)

    with pytest.raises(Unavailable) as info:
        asyncio.run(go())
    assert info.value.retry_after == 9.0
    assert json.loads(seen[0].content) == {"wait_s": 0}


def test_create_waits_longer_when_asked_to_queue():
    assert _api.create_sandbox(SandboxSpec(wait_s=600)).read_timeout == _api.CREATE_TIMEOUT + 600
    assert _api.create_sandbox(SandboxSpec()).read_timeout == _api.CREATE_TIMEOUT


def test_resize_sends_only_the_given_limits_and_reads_placement():
    seen: list[httpx.Request] = []
    transport = _answering(200, json.dumps(SANDBOX).encode(), {"content-type": "application/json"}, seen)
    with Client("http://cloche.test", "k", transport=transport) as client:
        sbx = client.sandboxes.get("sb-1")
        assert sbx.info.placement == {"node": "n1", "score": 0.7}
        assert sbx.resize(memory_mb=512) is sbx
        sbx.resize(cpu=2, pids=64, allow_move=True)
    patches = [r for r in seen if r.method == "PATCH"]
    assert [r.url.path for r in patches] == ["/v1/sandboxes/sb-1"] * 2
    assert json.loads(patches[0].content) == {"memory_mb": 512}
    assert json.loads(patches[1].content) == {"cpu": 2, "pids": 64, "allow_move": True}


def test_async_resize_sends_patch():
    seen: list[httpx.Request] = []
    transport = _answering(200, json.dumps(SANDBOX).encode(), {"content-type": "application/json"}, seen)

    async def go() -> int | None:
        async with AsyncClient("http://cloche.test", "k", transport=transport) as client:
            sbx = await client.sandboxes.get("sb-1")
            return (await sbx.resize(memory_mb=512)).info.memory_mb

    assert asyncio.run(go()) == 512
    assert seen[-1].method == "PATCH" and json.loads(seen[-1].content) == {"memory_mb": 512}


def test_placement_is_optional():
    from cloche.client.models import SandboxInfo

    assert SandboxInfo(id="sb-1", state="running").placement is None
