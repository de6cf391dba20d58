"""Request building and response mapping of the agent, snapshot and state calls, over
httpx.MockTransport (no server)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from cloche import AsyncClient, Client
from cloche.client import NotFound, PreconditionFailed, ServerError
from cloche.client._api import is_server_error
from cloche.client.errors import error_from_response


def _client(handler) -> Client:
    return Client("http://cloche.test", "k", transport=httpx.MockTransport(handler))


def test_412_maps_to_precondition_failed_with_its_fields():
    body = {"error": {"code": "precondition_failed", "message": "m", "key": "k", "current_version": 3, "index": 1}}
    exc = error_from_response(412, json.dumps(body).encode())
    assert isinstance(exc, PreconditionFailed)
    assert (exc.key, exc.current_version, exc.index, exc.status) == ("k", 3, 1, 412)
    bare = error_from_response(412, b"")
    assert isinstance(bare, PreconditionFailed) and bare.code == "precondition_failed" and bare.current_version is None


@pytest.mark.parametrize(
    ("status", "body", "server"),
    [
        (404, {"error": {"code": "not_found", "message": "app x not found"}}, True),
        (502, {"error": {"code": "agent_crashed", "message": "..."}}, True),
        (404, {"error": {"code": "mine", "message": "no"}, "extra": 1}, False),
        (404, {"error": "nope"}, False),
        (500, ["not", "a", "dict"], False),
        (200, {"error": {"code": "x", "message": "y"}}, False),
    ],
)
def test_is_server_error(status, body, server):
    response = httpx.Response(status, json=body)
    assert is_server_error(response) is server


def test_invoke_passes_agent_answers_through_and_raises_server_errors():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.startswith("/v1/apps/gone/"):
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "app gone not found"}})
        if request.url.path.endswith("/crash"):
            return httpx.Response(502, json={"error": {"code": "agent_crashed", "message": "boom"}})
        return httpx.Response(404, json={"detail": "agent's own 404"}, headers={"X-Agent": "1"})

    with _client(handler) as client:
        answer = client.agents("memo")["a b/c"].invoke(json={"m": 1}, path="v1/chat", params={"q": "1"})
        assert answer.status_code == 404 and answer.json() == {"detail": "agent's own 404"} and not answer.ok
        assert answer.headers["x-agent"] == "1"
        request = seen[-1]
        assert request.url.raw_path == b"/v1/apps/memo/agents/a%20b%2Fc/invoke/v1/chat?q=1"
        assert request.headers["content-type"] == "application/json" and json.loads(request.content) == {"m": 1}
        client.agents("memo")["k"].invoke(b"raw", method="put", headers={"Content-Type": "text/x"})
        assert seen[-1].method == "PUT" and seen[-1].headers["content-type"] == "text/x"
        assert seen[-1].content == b"raw"
        with pytest.raises(NotFound):
            client.agents("gone")["k"].invoke()
        with pytest.raises(ServerError) as crashed:
            client.agents("memo")["k"].invoke(path="crash")
        assert crashed.value.code == "agent_crashed"
        with client.agents("memo")["k"].invoke_stream(b"x") as stream:
            assert stream.status_code == 404 and b"".join(stream) == b'{"detail":"agent\'s own 404"}'


def test_state_calls_build_the_documented_requests():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if request.method == "GET" and "/kv/" in path:
            if path.endswith("/missing"):
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
            return httpx.Response(200, content=b"\x00v", headers={"ETag": '"7"', "X-Cloche-Expires-At": "100.5"})
        if request.method == "PUT":
            return httpx.Response(200, json={"version": 8}, headers={"ETag": '"8"'})
        if path.endswith("/batch"):
            return httpx.Response(200, json={"results": [{"op": "put", "key": "a", "version": 1, "existed": True}]})
        if path.endswith("/log") and request.method == "POST":
            return httpx.Response(201, json={"seq": 5})
        if path.endswith("/log"):
            items = [{"seq": 1, "data_b64": base64.b64encode(b"\xff").decode()}, {"seq": 2, "data": "text"}]
            return httpx.Response(200, json={"items": items, "last_seq": 2, "first_seq": 1})
        if path.endswith("/kv"):
            cursor = request.url.params.get("cursor")
            if cursor is None:
                return httpx.Response(200, json={"items": [{"key": "a", "version": 1, "size": 1}], "next_cursor": "c"})
            return httpx.Response(200, json={"items": [{"key": "b", "version": 2, "size": 2}], "next_cursor": None})
        return httpx.Response(500)

    with _client(handler) as client:
        ns = client.state("my ns")
        item = ns.get("dir/key")
        assert item is not None and (item.value, item.version, item.key) == (b"\x00v", 7, "dir/key")
        assert item.expires_at is not None and item.expires_at.timestamp() == 100.5
        assert seen[-1].url.raw_path == b"/v1/state/my%20ns/kv/dir/key"
        assert ns.get("missing") is None
        assert ns.put("k", "v", if_match=7, ttl_s=5) == 8
        assert seen[-1].headers["if-match"] == '"7"' and seen[-1].url.params["ttl_s"] == "5"
        ns.put("k", b"v", if_none_match=True)
        assert seen[-1].headers["if-none-match"] == "*" and "if-match" not in seen[-1].headers
        with pytest.raises(ValueError):
            ns.put("k", b"v", if_match=1, if_none_match=True)
        ns.batch([{"op": "put", "key": "a", "value": b"\x01"}, {"op": "put", "key": "b", "value": "t"},
                  {"op": "check", "key": "c", "if_match": 2, "if_none_match": False}])  # fmt: skip
        assert json.loads(seen[-1].content) == {"ops": [
            {"op": "put", "key": "a", "value_b64": "AQ=="}, {"op": "put", "key": "b", "value": "t"},
            {"op": "check", "key": "c", "if_match": 2}]}  # fmt: skip
        assert ns.append("e", idempotency_key="i") == 5 and seen[-1].headers["idempotency-key"] == "i"
        page = ns.read(after=0)
        assert [(e.seq, e.data) for e in page.items] == [(1, b"\xff"), (2, b"text")]
        assert seen[-1].url.params["encoding"] == "base64"
        ns.wait(after=2, timeout_s=7)
        assert seen[-1].url.params["wait_s"] == "7" and seen[-1].extensions["timeout"]["read"] >= 37
        assert [k.key for k in ns.list("p")] == ["a", "b"]
        assert seen[-1].url.params["cursor"] == "c" and seen[-1].url.params["prefix"] == "p"


def test_async_state_list_pages():
    pages = iter([{"items": [{"key": "a", "version": 1, "size": 1}], "next_cursor": "n"},
                  {"items": [{"key": "b", "version": 1, "size": 1}], "next_cursor": None}])  # fmt: skip

    async def main() -> list[str]:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=next(pages)))
        async with AsyncClient("http://cloche.test", "k", transport=transport) as client:
            return [k.key async for k in client.state("ns").list()]

    assert asyncio.run(main()) == ["a", "b"]


def test_long_waits_are_split_into_server_sized_polls(monkeypatch):
    from cloche.client import _flows

    clock = [0.0]
    monkeypatch.setattr(_flows.time, "monotonic", lambda: clock[0])
    polls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        wait_s = float(request.url.params.get("wait_s", 0))
        polls.append(wait_s)
        clock[0] += wait_s
        return httpx.Response(200, json={"items": [], "last_seq": 0, "first_seq": 0})

    with _client(handler) as client:
        assert client.state("ns").wait(timeout_s=45).items == []
    assert polls == [20.0, 20.0, 5.0]
