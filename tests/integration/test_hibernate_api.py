"""Hibernate, fork and named snapshots over HTTP, including tenant isolation and
kill -9 of the server in the middle of hibernates and resumes."""

from __future__ import annotations

import random
import signal
import threading
import time

import httpx
import pytest

from cloche.tlsdefault import default_tls
from tests.integration.conftest import Server, crash_rounds


def test_hibernate_then_exec_wakes_transparently(tenant_client: httpx.Client):
    sid = tenant_client.post("/v1/sandboxes", json={"on_resume": "echo resumed >> /workspace/log"}).json()["id"]
    tenant_client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/a"}, content=b"A")
    r = tenant_client.post(f"/v1/sandboxes/{sid}/hibernate")
    assert r.status_code == 200 and r.json()["state"] == "hibernated"
    cmd = "cat /workspace/a; sleep 0.2; cat /workspace/log"
    out = tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": cmd})
    assert out.json()["stdout"] == "Aresumed\n"
    assert tenant_client.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
    tenant_client.delete(f"/v1/sandboxes/{sid}")


def test_idle_policy_is_visible_and_applied(tenant_client: httpx.Client):
    sb = tenant_client.post("/v1/sandboxes", json={"idle": {"hibernate_after_s": 1}, "on_timeout": "hibernate"}).json()
    assert sb["idle"]["hibernate_after_s"] == 1 and sb["on_timeout"] == "hibernate"
    deadline = time.time() + 10
    while time.time() < deadline and tenant_client.get(f"/v1/sandboxes/{sb['id']}").json()["state"] != "hibernated":
        time.sleep(0.2)
    assert tenant_client.get(f"/v1/sandboxes/{sb['id']}").json()["state"] == "hibernated"
    assert tenant_client.post(f"/v1/sandboxes/{sb['id']}/resume").json()["state"] == "running"
    tenant_client.delete(f"/v1/sandboxes/{sb['id']}")


def test_fork_and_named_snapshots(tenant_client: httpx.Client):
    sid = tenant_client.post("/v1/sandboxes", json={"metadata": {"user": "u"}}).json()["id"]
    tenant_client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/v"}, content=b"1")
    fork = tenant_client.post(f"/v1/sandboxes/{sid}/fork", json={"name": "the-fork"})
    assert fork.status_code == 201 and fork.json()["metadata"] == {"user": "u"}
    snap = tenant_client.post(f"/v1/sandboxes/{sid}/snapshots", json={"name": "v1"})
    assert snap.status_code == 201, snap.text
    snap_id = snap.json()["id"]
    tenant_client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/v"}, content=b"2")
    assert [s["name"] for s in tenant_client.get("/v1/snapshots").json()["items"]] == ["v1"]
    dup = tenant_client.post(f"/v1/sandboxes/{sid}/snapshots", json={"name": "v1"})
    assert dup.status_code == 409
    restored = tenant_client.post("/v1/sandboxes", json={"snapshot": snap_id}).json()["id"]
    assert tenant_client.get(f"/v1/sandboxes/{restored}/files", params={"path": "/workspace/v"}).content == b"1"
    forked = fork.json()["id"]
    assert tenant_client.get(f"/v1/sandboxes/{forked}/files", params={"path": "/workspace/v"}).content == b"1"
    assert tenant_client.delete(f"/v1/snapshots/{snap_id}").status_code == 204
    assert tenant_client.get(f"/v1/snapshots/{snap_id}").status_code == 404
    for s in (sid, restored, fork.json()["id"]):
        tenant_client.delete(f"/v1/sandboxes/{s}")


def test_snapshots_and_forks_are_tenant_private(server: Server, tenant_client: httpx.Client):
    sid = tenant_client.post("/v1/sandboxes", json={}).json()["id"]
    snap_id = tenant_client.post(f"/v1/sandboxes/{sid}/snapshots", json={"name": "mine"}).json()["id"]
    _, other_key = server.tenant()
    with server.client(other_key) as other:
        assert other.get("/v1/snapshots").json()["items"] == []
        for method, url, body in [
            ("GET", f"/v1/snapshots/{snap_id}", None),
            ("DELETE", f"/v1/snapshots/{snap_id}", None),
            ("POST", "/v1/sandboxes", {"snapshot": snap_id}),
            ("POST", f"/v1/sandboxes/{sid}/fork", {}),
            ("POST", f"/v1/sandboxes/{sid}/hibernate", None),
            ("POST", f"/v1/sandboxes/{sid}/snapshots", {"name": "theirs"}),
        ]:
            r = other.request(method, url, json=body)
            assert r.status_code == 404, (method, url, r.text)
            assert r.json()["error"]["code"] == "not_found"
    assert tenant_client.get(f"/v1/snapshots/{snap_id}").status_code == 200
    tenant_client.delete(f"/v1/snapshots/{snap_id}")
    tenant_client.delete(f"/v1/sandboxes/{sid}")


@pytest.fixture()
def crash_server(tmp_path):
    srv = Server(tmp_path / "data", pool_size=0)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


def test_kill_9_during_hibernate_and_resume_loses_nothing(crash_server: Server):
    """SIGKILLs (12; CLOCHE_CRASH_KILLS for a soak) at random moments of hibernates and
    resumes: after each restart the sandbox is in a consistent state and, once woken, has
    every acknowledged file."""
    _, key = crash_server.tenant()
    rng = random.Random(1234)
    with crash_server.client(key) as c:
        sid = c.post("/v1/sandboxes", json={"name": "victim"}).json()["id"]
        c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "head -c 5000000 /dev/urandom > /workspace/bulk"})
        expected_sum = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "md5sum < /workspace/bulk"}).json()["stdout"]
    acked: list[str] = []
    for i in range(crash_rounds(12)):
        with crash_server.client(key) as c:
            r = c.put(f"/v1/sandboxes/{sid}/files", params={"path": f"/workspace/ack{i}"}, content=str(i).encode())
            assert r.status_code == 200, r.text
            acked.append(f"ack{i}")
            op = rng.choice(["hibernate", "hibernate-drop", "resume"])
            url = {"hibernate": f"/v1/sandboxes/{sid}/hibernate", "resume": f"/v1/sandboxes/{sid}/resume",
                   "hibernate-drop": f"/v1/sandboxes/{sid}/hibernate?keep_local=false"}[op]  # fmt: skip
            if op == "resume":
                c.post(f"/v1/sandboxes/{sid}/hibernate?keep_local={rng.choice(['true', 'false'])}")
            threading.Thread(target=_fire, args=(crash_server.url, key, url), daemon=True).start()
            time.sleep(rng.uniform(0.0, 0.3))
        crash_server.stop(signal.SIGKILL)
        crash_server.start()
        with crash_server.client(key) as c:
            state = c.get(f"/v1/sandboxes/{sid}").json()["state"]
            assert state in ("running", "hibernated", "stopped"), state
    with crash_server.client(key) as c:
        listing = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "ls /workspace; md5sum < /workspace/bulk"})
        out = listing.json()["stdout"]
        for name in acked:
            assert name in out.split(), f"{name} lost"
        assert out.endswith(expected_sum)
        c.delete(f"/v1/sandboxes/{sid}")


def _fire(url: str, key: str, path: str) -> None:
    try:
        httpx.post(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, verify=default_tls())
    except httpx.HTTPError:
        pass
