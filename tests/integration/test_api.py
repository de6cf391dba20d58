"""The HTTP API of a real `cloche up`: tenancy, auth, validation, limits, lifecycle."""

from __future__ import annotations

import io
import tarfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import Server


def _make(c: httpx.Client, **body) -> dict:
    r = c.post("/v1/sandboxes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_health_needs_no_auth_and_openapi_is_served(server: Server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/sandboxes/{sandbox_id}/exec" in spec["paths"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer garbage", "Basic abc", "ck_nobearer"])
def test_missing_or_garbage_key_is_401(server: Server, header):
    headers = {"Authorization": header} if header else {}
    r = httpx.get(f"{server.url}/v1/sandboxes", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_revoked_key_is_401(server: Server):
    tenant_id, _ = server.tenant()
    with server.client() as admin:
        r = admin.post(f"/v1/tenants/{tenant_id}/keys")
        assert r.status_code == 201
        key_id, key = r.json()["id"], r.json()["api_key"]
        with server.client(key) as c:
            assert c.get("/v1/sandboxes").status_code == 200
            assert admin.delete(f"/v1/tenants/{tenant_id}/keys/{key_id}").status_code == 204
            assert c.get("/v1/sandboxes").status_code == 401


def test_keys_are_stored_only_as_hashes(server: Server):
    _, key = server.tenant()
    assert key.encode() not in (server.data_dir / "cloche.db").read_bytes()


def test_non_admin_cannot_manage_tenants(tenant_client: httpx.Client):
    r = tenant_client.post("/v1/tenants", json={"name": "sneaky"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_create_exec_files_roundtrip(tenant_client: httpx.Client):
    sb = _make(tenant_client, metadata={"user": "u1"}, env={"GREETING": "hello"})
    sid = sb["id"]
    assert sb["state"] == "running"
    r = tenant_client.post(f"/v1/sandboxes/{sid}/exec",
                           json={"cmd": ["python3", "-c", "import os; print(os.environ['GREETING'])"]})  # fmt: skip
    assert r.json()["stdout"] == "hello\n" and r.json()["exit_code"] == 0
    assert tenant_client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/a/b.txt"},
                             content=b"data").json() == {"path": "/workspace/a/b.txt", "size": 4}  # fmt: skip
    assert tenant_client.get(f"/v1/sandboxes/{sid}/files", params={"path": "a/b.txt"}).content == b"data"
    listing = tenant_client.get(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/a"}).json()
    assert [e["name"] for e in listing["entries"]] == ["b.txt"]
    seen = tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "cat /workspace/a/b.txt"})
    assert seen.json()["stdout"] == "data"
    assert tenant_client.delete(f"/v1/sandboxes/{sid}/files", params={"path": "a/b.txt"}).status_code == 204
    gone = tenant_client.get(f"/v1/sandboxes/{sid}/files", params={"path": "a/b.txt"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert tenant_client.delete(f"/v1/sandboxes/{sid}").status_code == 204
    assert tenant_client.get(f"/v1/sandboxes/{sid}").status_code == 404


def test_archive_roundtrip(tenant_client: httpx.Client):
    sid = _make(tenant_client)["id"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("proj/main.py", b"print('hi')\n"), ("proj/README", b"readme")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = tenant_client.put(f"/v1/sandboxes/{sid}/archive", params={"path": "/workspace"},
                          content=buf.getvalue())  # fmt: skip
    assert r.status_code == 200 and r.json()["files"] == 2
    run = tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "python3 /workspace/proj/main.py"})
    assert run.json()["stdout"] == "hi\n"
    out = tenant_client.get(f"/v1/sandboxes/{sid}/archive", params={"path": "/workspace/proj"})
    with tarfile.open(fileobj=io.BytesIO(out.content)) as tar:
        assert sorted(tar.getnames()) == ["README", "main.py"]
    tenant_client.delete(f"/v1/sandboxes/{sid}")


def test_idempotent_create_by_name(tenant_client: httpx.Client):
    first = _make(tenant_client, name="user-42")
    again = tenant_client.post("/v1/sandboxes", json={"name": "user-42"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    tenant_client.delete(f"/v1/sandboxes/{first['id']}")


def test_list_filters_by_state_and_metadata(tenant_client: httpx.Client):
    a = _make(tenant_client, metadata={"team": "red"})
    b = _make(tenant_client, metadata={"team": "blue"})
    tenant_client.post(f"/v1/sandboxes/{b['id']}/pause")
    red = tenant_client.get("/v1/sandboxes", params={"metadata.team": "red"}).json()["items"]
    assert [s["id"] for s in red] == [a["id"]]
    paused = tenant_client.get("/v1/sandboxes", params={"state": "paused"}).json()["items"]
    assert [s["id"] for s in paused] == [b["id"]]
    # exec on a paused sandbox wakes it transparently
    r = tenant_client.post(f"/v1/sandboxes/{b['id']}/exec", json={"cmd": "echo awake"})
    assert r.json()["stdout"] == "awake\n"
    assert tenant_client.get(f"/v1/sandboxes/{b['id']}").json()["state"] == "running"
    for s in (a, b):
        tenant_client.delete(f"/v1/sandboxes/{s['id']}")


def test_other_tenants_resources_look_nonexistent(server: Server, tenant_client: httpx.Client):
    sid = _make(tenant_client)["id"]
    # the owner's exec first: the server remembers whose sandbox it is from then on
    assert tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "true"}).json()["exit_code"] == 0
    _, other_key = server.tenant()
    routes = [
        ("GET", f"/v1/sandboxes/{sid}", None),
        ("DELETE", f"/v1/sandboxes/{sid}", None),
        ("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_s": 10}),
        ("POST", f"/v1/sandboxes/{sid}/pause", None),
        ("POST", f"/v1/sandboxes/{sid}/resume", None),
        ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "true"}),
        ("POST", f"/v1/sandboxes/{sid}/exec/stream", {"cmd": "true"}),
        ("GET", f"/v1/sandboxes/{sid}/files?path=/etc/hosts", None),
        ("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/x", None),
        ("DELETE", f"/v1/sandboxes/{sid}/files?path=/etc/hosts", None),
        ("GET", f"/v1/sandboxes/{sid}/files/stat?path=/etc", None),
        ("POST", f"/v1/sandboxes/{sid}/files/mkdir", {"path": "/tmp/d"}),
        ("POST", f"/v1/sandboxes/{sid}/files/rename", {"src": "/tmp/a", "dst": "/tmp/b"}),
        ("GET", f"/v1/sandboxes/{sid}/archive?path=/etc", None),
        ("PUT", f"/v1/sandboxes/{sid}/archive?path=/tmp", None),
    ]
    with server.client(other_key) as other:
        for method, url, body in routes:
            theirs = other.request(method, url, json=body)
            missing = other.request(method, url.replace(sid, "sb_0000000000000000"), json=body)
            assert theirs.status_code == 404, (method, url, theirs.text)
            assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
            assert theirs.text.replace(sid, "X") == missing.text.replace("sb_0000000000000000", "X")
        assert other.get("/v1/sandboxes").json()["items"] == []
    assert tenant_client.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
    tenant_client.delete(f"/v1/sandboxes/{sid}")
    gone = tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "true"})  # its owner remembered, it is gone
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found", gone.text


def test_quota_names_the_limit(server: Server):
    _, key = server.tenant(max_sandboxes=1, max_cpu=1.5)
    with server.client(key) as c:
        first = _make(c, cpu=1)
        r = c.post("/v1/sandboxes", json={"cpu": 1})
        assert r.status_code == 429 and "max_sandboxes" in r.json()["error"]["message"]
        c.delete(f"/v1/sandboxes/{first['id']}")
        r = c.post("/v1/sandboxes", json={"cpu": 2})
        assert r.status_code == 429 and "max_cpu" in r.json()["error"]["message"]


def test_concurrent_creates_and_forks_cannot_exceed_max_sandboxes(server: Server):
    """One quota check (the scheduler's, with the creates in flight counted): of four
    creates sent at once under max_sandboxes=2, exactly two are made; forks too."""
    _, key = server.tenant(max_sandboxes=2)

    def create(_: int) -> httpx.Response:
        with server.client(key) as c:
            return c.post("/v1/sandboxes", json={"cpu": 0.5, "memory_mb": 128})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(create, range(4)))
    made = [r.json()["id"] for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 429]
    assert len(made) == 2 and len(refused) == 2, [r.text for r in answers]
    assert all(r.json()["error"]["code"] == "quota_exceeded" for r in refused)
    with server.client(key) as c:
        c.delete(f"/v1/sandboxes/{made[1]}")

        def fork(_: int) -> httpx.Response:
            return c.post(f"/v1/sandboxes/{made[0]}/fork", json={})

        with ThreadPoolExecutor(2) as pool:
            forks = list(pool.map(fork, range(2)))
        assert sorted(r.status_code for r in forks) == [201, 429], [r.text for r in forks]
        assert len(c.get("/v1/sandboxes").json()["items"]) == 2
        for item in c.get("/v1/sandboxes").json()["items"]:
            c.delete(f"/v1/sandboxes/{item['id']}")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"cpu": "lots"}, 422, "cpu"),
        ({"memory_mb": 1}, 422, "memory_mb"),
        ({"tenant_id": "tn_x"}, 422, "tenant_id"),
        ({"name": "../x"}, 422, "name"),
        ({"env": {"A=B": "c"}}, 400, "environment"),
        ({"template": "no-such-template"}, 400, "no-such-template"),
    ],
)
def test_bad_create_bodies_name_the_problem(tenant_client: httpx.Client, body, status, field):
    r = tenant_client.post("/v1/sandboxes", json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]["message"]


def test_malformed_and_oversized_bodies(tenant_client: httpx.Client):
    r = tenant_client.post("/v1/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    deep = b"[" * 200_000 + b"]" * 200_000
    r = tenant_client.post("/v1/sandboxes", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413, 422)
    huge = b'{"name": "' + b"a" * (2 << 20) + b'"}'
    r = tenant_client.post("/v1/sandboxes", content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_file_path_attacks_over_http(tenant_client: httpx.Client):
    sid = _make(tenant_client)["id"]
    for path in ("../../etc/passwd", "/workspace/../../etc/shadow", "%2e%2e/%2e%2e/etc/passwd",
                 "a\x00b", "x" * 300, "/" + "d/" * 3000):  # fmt: skip
        r = tenant_client.get(f"/v1/sandboxes/{sid}/files", params={"path": path})
        assert r.status_code in (400, 404, 422), (path, r.status_code)
    tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "ln -s / /workspace/host"})
    r = tenant_client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/host/tmp/escaped"},
                          content=b"x")  # fmt: skip
    assert r.status_code == 200
    inside = tenant_client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "cat /tmp/escaped"})
    assert inside.json()["stdout"] == "x"
    import os

    assert not os.path.exists("/tmp/escaped")
    tenant_client.delete(f"/v1/sandboxes/{sid}")


def test_metrics_and_nodes(server: Server):
    text = httpx.get(f"{server.url}/metrics").text
    assert "cloche_sandboxes" in text and "cloche_node_capacity" in text
    with server.client() as admin:
        node = admin.get("/v1/nodes").json()["items"][0]
        assert node["capacity"]["cpu"] >= 1 and node["pools"][0]["template"] == "base"
