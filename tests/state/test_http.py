"""The state routes over HTTP, against a real server process (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Server
from tests.state.conftest import pg_dsn


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLOCHE_RATE_PER_S": "100000", "CLOCHE_RATE_BURST": "100000"}
    if request.param == "postgres":
        env["CLOCHE_STATE_DSN"] = pg_dsn()
    s = Server(tmp_path_factory.mktemp("state-http") / "data", pool_size=0, env=env)
    s.start()
    yield s
    s.stop()
    s.wipe()


@pytest.fixture()
def c(srv: Server) -> Iterator[httpx.Client]:
    _, key = srv.tenant()
    with srv.client(key) as client:
        yield client


def ns() -> str:
    return "ns-" + uuid.uuid4().hex[:8]


def test_kv_roundtrip_etags_and_conditions(c):
    n = ns()
    r = c.put(f"/v1/state/{n}/kv/notes/today.md", content=b"\x00binary\xff")
    assert r.status_code == 200 and r.json() == {"version": 1} and r.headers["etag"] == '"1"'
    r = c.get(f"/v1/state/{n}/kv/notes/today.md")
    assert r.status_code == 200 and r.content == b"\x00binary\xff" and r.headers["etag"] == '"1"'
    assert c.get(f"/v1/state/{n}/kv/notes/today.md", headers={"If-None-Match": '"1"'}).status_code == 304
    r = c.put(f"/v1/state/{n}/kv/notes/today.md", content=b"v2", headers={"If-Match": '"1"'})
    assert r.json()["version"] == 2
    r = c.put(f"/v1/state/{n}/kv/notes/today.md", content=b"v3", headers={"If-Match": '"1"'})
    assert r.status_code == 412
    err = r.json()["error"]
    assert err["code"] == "precondition_failed" and err["current_version"] == 2
    r = c.put(f"/v1/state/{n}/kv/notes/today.md", content=b"v3", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert c.put(f"/v1/state/{n}/kv/new", content=b"x", headers={"If-Match": "*"}).status_code == 412
    assert c.put(f"/v1/state/{n}/kv/notes/today.md", content=b"v3", headers={"If-Match": "*"}).json() == {"version": 3}
    assert c.put(f"/v1/state/{n}/kv/new", content=b"x", headers={"If-None-Match": "*"}).status_code == 200
    assert c.delete(f"/v1/state/{n}/kv/new", headers={"If-Match": '"5"'}).status_code == 412
    assert c.delete(f"/v1/state/{n}/kv/new", headers={"If-Match": '"1"'}).status_code == 204
    assert c.delete(f"/v1/state/{n}/kv/new").status_code == 204
    r = c.get(f"/v1/state/{n}/kv/new")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.get(f"/v1/state/{n}/kv/notes/today.md").content == b"v3"


@pytest.mark.parametrize("tag", ['"1x"', "1", '"0"', "", '"', 'W/"x"', '"99999999999999999999999"'])
def test_a_malformed_entity_tag_never_matches(c, tag):
    """RFC 9110 §13.1.1: If-Match with a malformed tag is a 412 (with the current version),
    never a 400; If-None-Match with one matches nothing, so the condition holds."""
    n = ns()
    c.put(f"/v1/state/{n}/kv/k", content=b"v1")
    for method in ("PUT", "DELETE"):
        r = c.request(method, f"/v1/state/{n}/kv/k", content=b"x", headers={"If-Match": tag})
        assert r.status_code == 412, (method, tag, r.text)
        assert r.json()["error"]["code"] == "precondition_failed" and r.json()["error"]["current_version"] == 1
    assert c.put(f"/v1/state/{n}/kv/absent", content=b"x", headers={"If-Match": tag}).status_code == 412
    assert c.get(f"/v1/state/{n}/kv/k", headers={"If-None-Match": tag}).status_code == 200
    r = c.put(f"/v1/state/{n}/kv/k", content=b"v2", headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.json() == {"version": 2}


def test_entity_tag_lists(c):
    n = ns()
    c.put(f"/v1/state/{n}/kv/k", content=b"v1")
    assert c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-Match": '"7", "1x", "8"'}).status_code == 412
    r = c.put(f"/v1/state/{n}/kv/k", content=b"v2", headers={"If-Match": '"7", bad, "1"'})
    assert r.status_code == 200 and r.json() == {"version": 2}
    assert c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-None-Match": '"1", "2"'}).status_code == 412
    assert c.put(f"/v1/state/{n}/kv/k", content=b"v3", headers={"If-None-Match": '"1"'}).json() == {"version": 3}
    assert c.get(f"/v1/state/{n}/kv/k", headers={"If-None-Match": '"2", "3"'}).status_code == 304
    assert c.delete(f"/v1/state/{n}/kv/k", headers={"If-Match": '"2", "3"'}).status_code == 204
    assert c.put(f"/v1/state/{n}/kv/k", content=b"v1", headers={"If-None-Match": '"4"'}).json()["version"] >= 1


def test_bad_input_is_4xx_and_changes_nothing(c, srv):
    n = ns()
    c.put(f"/v1/state/{n}/kv/k", content=b"keep")
    cases = [
        (c.put(f"/v1/state/{n}/kv/k", content=b"x" * ((1 << 20) + 1)), 413),
        (c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-Match": "abc"}), 412),
        (c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-Match": '"0"'}), 412),
        (c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-None-Match": '"1"'}), 412),
        (c.put(f"/v1/state/{n}/kv/k", content=b"x", headers={"If-Match": "*", "If-None-Match": "*"}), 400),
        (c.put(f"/v1/state/{n}/kv/a%20b", content=b"x"), 400),
        (c.put(f"/v1/state/{n}/kv/a//b", content=b"x"), 400),
        (c.put(f"/v1/state/{n}/kv/" + "x" * 600, content=b"x"), 400),
        (c.put("/v1/state/bad%20ns/kv/k", content=b"x"), 400),
        (c.put(f"/v1/state/{n}/kv/k?ttl_s=-1", content=b"x"), 422),
        (c.post(f"/v1/state/{n}/batch", json={"ops": []}), 422),
        (c.post(f"/v1/state/{n}/batch", json={"ops": [{"op": "put", "key": "k", "value_b64": "!!"}]}), 400),
        (c.post(f"/v1/state/{n}/batch", json={"ops": [{"op": "nope", "key": "k"}]}), 422),
        (c.post(f"/v1/state/{n}/log", content=b"x" * ((1 << 20) + 1)), 413),
        (c.get(f"/v1/state/{n}/log?after=-1"), 422),
    ]
    for r, status in cases:
        assert r.status_code == status, (r.request.url, r.text)
        assert "error" in r.json()
    r = c.get(f"/v1/state/{n}/kv/k")
    assert r.content == b"keep" and r.headers["etag"] == '"1"'
    assert c.get(f"/v1/state/{n}/log").json()["items"] == []
    assert c.get("/v1/state/x/kv/k", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_list_and_batch(c):
    n = ns()
    for i in range(7):
        c.put(f"/v1/state/{n}/kv/p/{i}", content=str(i).encode())
    c.put(f"/v1/state/{n}/kv/q", content=b"q")
    r = c.get(f"/v1/state/{n}/kv", params={"prefix": "p/", "limit": 5}).json()
    assert [i["key"] for i in r["items"]] == [f"p/{i}" for i in range(5)] and r["next_cursor"] == "p/4"
    assert r["items"][0] == {"key": "p/0", "version": 1, "size": 1}
    r = c.get(f"/v1/state/{n}/kv", params={"prefix": "p/", "cursor": r["next_cursor"]}).json()
    assert [i["key"] for i in r["items"]] == ["p/5", "p/6"] and r["next_cursor"] is None
    b64 = base64.b64encode(b"\xff").decode()
    ops = [{"op": "put", "key": "a", "value": "text"}, {"op": "put", "key": "b", "value_b64": b64},
           {"op": "check", "key": "q", "if_match": 1}, {"op": "delete", "key": "p/0"}]  # fmt: skip
    r = c.post(f"/v1/state/{n}/batch", json={"ops": ops})
    assert r.status_code == 200
    got = [(x["op"], x["version"]) for x in r.json()["results"]]
    assert got == [("put", 1), ("put", 1), ("check", 1), ("delete", 2)]
    assert c.get(f"/v1/state/{n}/kv/b").content == b"\xff"
    bad = [{"op": "put", "key": "a", "value": "changed"}, {"op": "put", "key": "q", "value": "x", "if_match": 9}]
    r = c.post(f"/v1/state/{n}/batch", json={"ops": bad})
    assert r.status_code == 412 and r.json()["error"]["index"] == 1
    assert c.get(f"/v1/state/{n}/kv/a").content == b"text"


def test_log_over_http(c):
    n = ns()
    assert c.post(f"/v1/state/{n}/log", content=b"hello").json() == {"seq": 1}
    r = c.post(f"/v1/state/{n}/log", content=b"pay", headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201 and r.json() == {"seq": 2}
    r = c.post(f"/v1/state/{n}/log", content=b"pay", headers={"Idempotency-Key": "k1"})
    assert r.status_code == 200 and r.json() == {"seq": 2, "replayed": True}
    c.post(f"/v1/state/{n}/log", content=b"\xff\xfe")
    r = c.get(f"/v1/state/{n}/log", params={"after": 0}).json()
    assert r["items"] == [{"seq": 1, "data": "hello"}, {"seq": 2, "data": "pay"}, {"seq": 3, "data_b64": "//4="}]
    assert r["last_seq"] == 3
    got = {}

    def waiter():
        got["r"] = c.get(f"/v1/state/{n}/log", params={"after": 3, "wait_s": 10}).json()

    t = threading.Thread(target=waiter)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    c.post(f"/v1/state/{n}/log", content=b"late")
    t.join(10)
    assert got["r"]["items"] == [{"seq": 4, "data": "late"}] and time.monotonic() - t0 < 3
    assert c.post(f"/v1/state/{n}/log/trim", json={"upto": 2}).json() == {"first_seq": 3}
    r = c.get(f"/v1/state/{n}/log").json()
    assert [i["seq"] for i in r["items"]] == [3, 4] and r["first_seq"] == 3


def test_namespaces_are_per_tenant(srv):
    _, k1 = srv.tenant()
    _, k2 = srv.tenant()
    with srv.client(k1) as a, srv.client(k2) as b:
        a.put("/v1/state/shared-name/kv/secret", content=b"A's")
        a.post("/v1/state/shared-name/log", content=b"A's entry")
        assert b.get("/v1/state/shared-name/kv/secret").status_code == 404
        assert b.get("/v1/state/shared-name/kv").json()["items"] == []
        assert b.get("/v1/state/shared-name/log").json()["items"] == []
        b.put("/v1/state/shared-name/kv/secret", content=b"B's")
        assert a.get("/v1/state/shared-name/kv/secret").content == b"A's"


def test_sdk_state_client(srv):
    from cloche.client.state import StateClient, StateConflict

    _, key = srv.tenant()
    with StateClient(srv.url, key) as st:
        n = st.namespace(ns())
        assert n.get("k") == (None, None)
        v = n.put("k", b"one", if_none_match=True)
        assert n.get("k") == (b"one", v)
        with pytest.raises(StateConflict) as ei:
            n.put("k", "two", if_match=v + 5)
        assert ei.value.current_version == v
        assert n.batch([{"op": "put", "key": "a", "value": b"\x00"}, {"op": "check", "key": "k", "if_match": v}])
        assert [i["key"] for i in n.list()] == ["a", "k"]
        assert n.append("e1", idempotency_key="x") == n.append("e1", idempotency_key="x") == 1
        assert n.read() == ([(1, b"e1")], 1)
        assert n.trim(1) == 2
        n.delete("k")
        assert n.get("k") == (None, None)


def test_grants_need_the_tenants_own_sandbox(srv):
    _, k1 = srv.tenant()
    _, k2 = srv.tenant()
    with srv.client(k1) as a, srv.client(k2) as b:
        r = a.post("/v1/sandboxes", json={})
        assert r.status_code in (200, 201), r.text
        sb = r.json()["id"]
        try:
            assert a.put(f"/v1/state/team/grants/{sb}").status_code == 204
            assert a.get("/v1/state/team/grants").json() == {"sandboxes": [sb]}
            assert b.put(f"/v1/state/team/grants/{sb}").status_code == 404  # not B's sandbox
            assert a.put("/v1/state/team/grants/sb_nonexistent").status_code == 404
            assert b.get("/v1/state/team/grants").json() == {"sandboxes": []}
            assert a.delete(f"/v1/state/team/grants/{sb}").status_code == 204
            assert a.get("/v1/state/team/grants").json() == {"sandboxes": []}
        finally:
            a.delete(f"/v1/sandboxes/{sb}")


def test_lost_update_and_idempotency_over_http(srv):
    """50 concurrent If-Match incrementers over HTTP: final value == successes, losers got
    412; one append retried 20 times concurrently with one Idempotency-Key: one entry."""
    from concurrent.futures import ThreadPoolExecutor

    _, key = srv.tenant()
    n = ns()
    clients = [srv.client(key) for _ in range(10)]
    try:
        clients[0].put(f"/v1/state/{n}/kv/counter", content=b"0")

        def incrementer(i: int) -> tuple[int, int]:
            c = clients[i % len(clients)]
            wins = losses = 0
            for _ in range(3):
                r = c.get(f"/v1/state/{n}/kv/counter")
                new = str(int(r.content) + 1).encode()
                w = c.put(f"/v1/state/{n}/kv/counter", content=new, headers={"If-Match": r.headers["etag"]})
                assert w.status_code in (200, 412), w.text
                wins += w.status_code == 200
                losses += w.status_code == 412
            return wins, losses

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(incrementer, range(50)))
        wins = sum(w for w, _ in results)
        losses = sum(x for _, x in results)
        r = clients[0].get(f"/v1/state/{n}/kv/counter")
        assert int(r.content) == wins and wins + losses == 150 and losses > 0
        assert r.headers["etag"] == f'"{wins + 1}"'

        def append(i: int) -> tuple[int, int]:
            r = clients[i % len(clients)].post(f"/v1/state/{n}/log", content=b"charge card",
                                               headers={"Idempotency-Key": "charge-1"})  # fmt: skip
            return r.status_code, r.json()["seq"]

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(append, range(20)))
        assert {seq for _, seq in answers} == {1}
        assert sorted(status for status, _ in answers) == [200] * 19 + [201]
        log = clients[0].get(f"/v1/state/{n}/log").json()
        assert log["items"] == [{"seq": 1, "data": "charge card"}] and log["last_seq"] == 1
    finally:
        for c in clients:
            c.close()


def test_a_revoked_key_is_refused_on_the_next_request(srv):
    """Keys are remembered between requests (the lookup is a query), but a revocation ends
    that at once: the very next KV request with the key is a 401."""
    tenant_id, _ = srv.tenant()
    n = ns()
    with srv.client() as admin:
        r = admin.post(f"/v1/tenants/{tenant_id}/keys")
        key_id, key = r.json()["id"], r.json()["api_key"]
        with srv.client(key) as c:
            assert c.put(f"/v1/state/{n}/kv/k", content=b"x").status_code == 200
            assert c.get(f"/v1/state/{n}/kv/k").status_code == 200
            assert admin.delete(f"/v1/tenants/{tenant_id}/keys/{key_id}").status_code == 204
            for r in (c.put(f"/v1/state/{n}/kv/k", content=b"y"), c.get(f"/v1/state/{n}/kv/k")):
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
                assert r.headers["x-cloche-error"] == "unauthorized" and r.headers["x-request-id"]
