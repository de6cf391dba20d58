"""HTTP as clients expect it, against a real `cloche up`: bodies that may be left out,
one error shape for every 4xx and 5xx, and the access log in the server's own output."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import Server

SECRET = "tok-do-not-log-0123456789"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose snapshot store is a directory the tests can break (for a 500)."""
    base = tmp_path_factory.mktemp("http")
    s = Server(base / "data", env={"CLOCHE_BLOB_URL": f"file://{base / 'blobs'}"})
    s.start()
    yield s
    s.stop()
    s.wipe()


@pytest.fixture(scope="module")
def key(srv: Server) -> str:
    return srv.tenant()[1]


@pytest.fixture(scope="module")
def c(srv: Server, key: str) -> Iterator[httpx.Client]:
    with srv.client(key) as client:
        yield client


@pytest.fixture(scope="module")
def sid(c: httpx.Client) -> str:
    r = c.post("/v1/sandboxes")  # no body at all: the same as {}
    assert r.status_code == 201, r.text
    return r.json()["id"]


def access_entries(server: Server) -> list[dict[str, Any]]:
    entries = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith('{"time"'):
            entries.append(json.loads(line))
    return entries


def entry_for(server: Server, request_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in access_entries(server) if e["request_id"] == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line with request_id {request_id}")


# ---- bodies ----------------------------------------------------------------------------


def test_action_posts_need_no_body(c: httpx.Client, sid: str):
    """No body and no Content-Type works exactly as `{}` (curl -X POST, fetch without body)."""
    for path in ("pause", "resume", "hibernate", "resume"):
        assert c.post(f"/v1/sandboxes/{sid}/{path}").status_code == 200
        assert c.post(f"/v1/sandboxes/{sid}/{path}", json={}).status_code == 200
    for body in ({}, None):
        r = c.post(f"/v1/sandboxes/{sid}/fork", **({"json": body} if body is not None else {}))
        assert r.status_code == 201, r.text
        assert c.delete(f"/v1/sandboxes/{r.json()['id']}").status_code == 204
    assert c.patch(f"/v1/sandboxes/{sid}").status_code == 200
    for action in ("snapshots", "timeout"):  # bodies with required fields: the same 422 as for {}
        r = c.post(f"/v1/sandboxes/{sid}/{action}")
        assert r.status_code == 422 and r.json() == c.post(f"/v1/sandboxes/{sid}/{action}", json={}).json()


# ---- the error shape -------------------------------------------------------------------


def test_every_error_has_the_json_shape(srv: Server, c: httpx.Client, sid: str):
    admin = srv.client()
    anonymous = httpx.Client(base_url=srv.url, timeout=30)
    mcp = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    cases: list[tuple[httpx.Client, str, str, dict[str, Any], int]] = [
        (anonymous, "GET", "/no/such/path", {}, 404),
        (c, "GET", "/v1/sandboxes/sb_missing", {}, 404),
        (c, "GET", "/v1/snapshots/missing", {}, 404),
        (anonymous, "GET", "/ui/no-such-page", {}, 404),
        (anonymous, "DELETE", "/healthz", {}, 405),
        (c, "PUT", "/v1/sandboxes", {}, 405),
        (c, "PUT", "/mcp", {}, 405),
        (c, "POST", "/v1/sandboxes", {"content": b'{"metadata": "' + b"x" * (2 << 20) + b'"}'}, 413),
        (c, "POST", "/v1/sandboxes", {"json": {"cpu": "lots"}}, 422),
        (c, "POST", "/v1/sandboxes", {"json": {"no_such_field": 1}}, 422),
        (admin, "POST", "/v1/tenants", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 422),
        (c, "POST", f"/v1/sandboxes/{sid}/exec", {}, 422),
        (c, "GET", "/v1/state/ns/log?after=-1", {}, 422),
        (anonymous, "GET", "/v1/sandboxes", {}, 401),
        (anonymous, "POST", "/mcp", {"headers": mcp, "content": b"{}"}, 401),
        (c, "GET", "/v1/tenants", {}, 403),
        (c, "PUT", "/v1/state/ns/kv/k", {"headers": {"If-Match": '"1x"'}}, 412),
        (c, "POST", "/mcp", {"headers": mcp, "content": b"{"}, 400),  # MCP's own: JSON-RPC, same two fields
    ]
    try:
        for client, method, path, kwargs, status in cases:
            r = client.request(method, path, **kwargs)
            assert r.status_code == status, (method, path, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json"), (method, path, r.headers)
            error = r.json()["error"]
            assert error["code"] and isinstance(error["message"], str), (method, path, r.text[:300])
    finally:
        admin.close()
        anonymous.close()


def test_an_unexpected_exception_is_a_500_with_the_shape(srv: Server, c: httpx.Client, sid: str):
    """The snapshot store's directory replaced by a file: whatever breaks inside is a bug
    as far as the route knows, and the client still gets JSON (the traceback is logged)."""
    blobs = srv.data_dir.parent / "blobs"
    aside = blobs.with_name("blobs-aside")
    blobs.rename(aside)
    blobs.write_text("not a directory")
    try:
        r = c.post(f"/v1/sandboxes/{sid}/snapshots", json={"name": "doomed"}, headers={"X-Request-Id": "boom-1"})
    finally:
        blobs.unlink()
        aside.rename(blobs)
    assert r.status_code == 500, r.text
    assert r.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error; the server's log has the details (request boom-1)",
    }
    assert r.headers["x-request-id"] == "boom-1"
    assert entry_for(srv, "boom-1")["status"] == 500
    assert c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "true"}).json()["exit_code"] == 0


# ---- the access log --------------------------------------------------------------------


def test_access_log_line_per_request(srv: Server, c: httpx.Client, key: str, sid: str):
    r = c.get(f"/v1/sandboxes/{sid}", params={"token": SECRET}, headers={"X-Request-Id": "get-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "get-1"
    e = entry_for(srv, "get-1")
    assert e["method"] == "GET" and e["path"] == "/v1/sandboxes/{sandbox_id}" and e["status"] == 200
    assert e["sandbox_id"] == sid and e["tenant_id"].startswith("tn_") and 0 < e["duration_ms"] < 10_000
    assert e["time"].endswith("+00:00")
    r = c.put("/v1/state/notes/kv/a/b.txt", content=f"body {SECRET}", headers={"X-Request-Id": "put-1"})
    assert entry_for(srv, "put-1")["path"] == "/v1/state/{ns}/kv/{key}"  # the fast path, named like the route
    generated = httpx.get(f"{srv.url}/no/{SECRET}?cloche_token={SECRET}").headers["x-request-id"]
    e = entry_for(srv, generated)
    assert e["path"] is None and e["status"] == 404 and e["tenant_id"] is None
    r = c.get(f"/v1/sandboxes/{sid}/ports/8080/x", params={"cloche_token": SECRET}, headers={"X-Request-Id": "p-1"})
    e = entry_for(srv, "p-1")
    assert e["path"] == "/v1/sandboxes/{sandbox_id}/ports/{port}/{path}" and e["sandbox_id"] == sid
    log = srv.log.read_text(errors="replace")
    assert SECRET not in log and key not in log and srv.admin_key not in log


def test_streams_are_logged_once_when_they_end(srv: Server, c: httpx.Client, key: str, sid: str):
    with c.stream("POST", f"/v1/sandboxes/{sid}/exec/stream", json={"cmd": "echo a; sleep 1.5; echo b"},
                  headers={"X-Request-Id": "sse-1"}) as r:  # fmt: skip
        lines = r.iter_lines()
        assert any("start" in line for line in lines)
        assert not [e for e in access_entries(srv) if e["request_id"] == "sse-1"]  # still streaming
        assert any('"b' in line for line in lines)
    e = entry_for(srv, "sse-1")
    assert e["status"] == 200 and e["duration_ms"] >= 1400 and e["path"] == "/v1/sandboxes/{sandbox_id}/exec/stream"
    url = f"ws://127.0.0.1:{srv.port}/v1/sandboxes/{sid}/pty?token={key}"
    with connect(url, additional_headers={"X-Request-Id": "ws-1"}) as ws:
        time.sleep(0.5)
        assert not [e for e in access_entries(srv) if e["request_id"] == "ws-1"]
        ws.close()
    e = entry_for(srv, "ws-1")
    assert e["method"] == "WEBSOCKET" and e["status"] == 101 and e["path"] == "/v1/sandboxes/{sandbox_id}/pty"
    assert e["tenant_id"].startswith("tn_") and e["sandbox_id"] == sid and e["duration_ms"] >= 500
    assert key not in srv.log.read_text(errors="replace")


def test_access_log_can_be_switched_off(tmp_path: Path):
    s = Server(tmp_path / "data", pool_size=0, env={"CLOCHE_ACCESS_LOG": "0", "CLOCHE_NETWORK": "0"})
    s.start()
    try:
        r = httpx.get(f"{s.url}/healthz")
        assert r.status_code == 200 and "x-request-id" not in r.headers
        with s.client() as admin:
            assert admin.get("/v1/sandboxes").status_code == 200
    finally:
        s.stop()
    assert access_entries(s) == []


def test_the_requests_just_before_a_stop_are_in_the_access_log(tmp_path: Path):
    """Lines are written in batches every few ms; a SIGTERM right after the last request
    still leaves every line in the log, the stop's own included."""
    s = Server(tmp_path / "data", pool_size=0, env={"CLOCHE_NETWORK": "0"})
    s.start()
    ids = [f"last-{i}-{time.monotonic_ns()}" for i in range(5)]
    try:
        with s.client() as admin:
            for rid in ids:
                assert admin.get("/v1/sandboxes", headers={"X-Request-Id": rid}).status_code == 200
    finally:
        assert s.stop() == 0
    logged = {e.get("request_id") for e in access_entries(s)}
    assert set(ids) <= logged
