"""The SDK's agents, hibernate/fork/snapshots and state against a real `cloche up`:
the same calls the README shows, sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from cloche import AsyncClient, Client
from cloche.client import (
    AgentError,
    AgentResponse,
    App,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ServerError,
    SnapshotInfo,
)
from cloche.examples import memo_app
from tests.integration.conftest import Server
from tests.sdk_faces import both_faces, face_client

# An agent that answers GET /<status> with that status and a JSON body shaped like the
# server's own errors plus one field, and streams POST bodies back in three chunks.
STATUS_AGENT = r"""
import os, socketserver, time
from http.server import BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def address_string(self): return "unix"
    def log_message(self, *a): pass
    def do_GET(self):
        code = int(self.path.strip("/") or 200)
        body = b'{"error": {"code": "mine", "message": "the agent says no"}, "agent": true}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Seen-Type", self.headers.get("Content-Type", ""))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"one:", data, b":three"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")

with socketserver.UnixStreamServer(os.environ["CLOCHE_AGENT_SOCKET"], H) as s:
    s.serve_forever()
"""


@pytest.fixture()
def tenant_key(server: Server) -> str:
    return server.tenant()[1]


@pytest.fixture()
def client(server: Server, tenant_key: str, request: pytest.FixtureRequest) -> Iterator[Client]:
    """A client of the sync face, or of the face a ``@both_faces`` test gives."""
    with face_client(getattr(request, "param", "sync"), server.url, tenant_key) as c:
        yield c


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@both_faces
def test_deploy_memo_and_invoke_through_the_agent_handle(client: Client):
    app = client.apps.deploy("memo", **memo_app())
    assert isinstance(app, App) and app.version == 1 and app.spec.command == ["python3", "/workspace/agent.py"]
    assert app.spec.idle is not None and app.spec.idle.pause_after_s == 30
    alice = client.agents("memo")["alice"]
    with pytest.raises(NotFound):
        alice.info()  # nothing exists before the first invoke

    first = alice.invoke(json={"message": "remember the cat is called Tom"})
    assert isinstance(first, AgentResponse) and first.ok and first.status == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json()["turn"] == 1 and first.json()["user"] == "alice"
    second = alice.invoke(b'{"message": "recall"}', headers={"Content-Type": "application/json"})
    assert second.json()["turn"] == 2 and second.json()["pid"] == first.json()["pid"]
    assert second.json()["reply"] == "the cat is called Tom" and "Tom" in second.text

    agents = client.agents("memo").list()
    assert [(a.key, a.state, a.app_version) for a in agents] == [("alice", "running", 1)]
    info = alice.info()
    assert info.sandbox_id == agents[0].sandbox_id and info.last_active_at is not None
    assert alice.sandbox().id == info.sandbox_id

    health = alice.invoke(method="GET", path="status")
    assert health.status_code == 200 and health.json()["ok"] is True
    with alice.invoke_stream(json={"message": "run: ls /workspace"}) as stream:
        assert stream.status_code == 200
        body = b"".join(stream)
    assert "memory.json" in AgentResponse(200, stream.headers, body).json()["reply"]

    assert [a.name for a in client.apps.list()] == ["memo"]
    assert client.apps.deploy("memo", **memo_app(env={"AGENT_VERSION": "2"})).version == 2
    assert client.apps.get("memo").spec.env == {"AGENT_VERSION": "2"}
    assert alice.invoke(json={"message": "recall"}).json()["version"] == "2"

    alice.delete()
    assert client.agents("memo").list() == []
    assert alice.invoke(json={"message": "recall"}).json()["turn"] == 1  # a fresh instance
    client.apps.delete("memo", state=True)
    with pytest.raises(NotFound):
        client.apps.get("memo")


@both_faces
def test_server_errors_raise_agent_answers_pass_through(client: Client):
    with pytest.raises(NotFound):
        client.agents("no-such-app")["k"].invoke(json={})
    with pytest.raises(InvalidRequest):
        client.apps.deploy("Bad_Name", command=["true"])
    with pytest.raises(TypeError):
        client.apps.deploy("x", command="python3 agent.py")  # type: ignore[arg-type]

    client.apps.deploy("status", command=["python3", "-c", STATUS_AGENT])
    agent = client.agents("status")["k"]
    for code in (404, 500, 418):
        answer = agent.invoke(method="GET", path=str(code))
        assert answer.status_code == code and answer.json()["agent"] is True and not answer.ok
    with pytest.raises(AgentError) as info:
        agent.invoke(method="GET", path="503").raise_for_status()
    assert info.value.status == 503

    echoed = agent.invoke("héllo")
    assert echoed.content == "one:héllo:three".encode() and echoed.headers["x-seen-type"].startswith("text/plain")
    with agent.invoke_stream(b"\x00\x01") as stream:
        chunks = list(stream)
    assert b"".join(chunks) == b"one:\x00\x01:three" and len(chunks) >= 2  # streamed, not buffered

    client.apps.deploy("memo", **memo_app())
    memo = client.agents("memo")["k"]
    assert memo.invoke(json={"message": "hi"}).ok
    with pytest.raises(ServerError) as crashed:
        memo.invoke(json={"message": "crash"})
    assert crashed.value.code == "agent_crashed" and crashed.value.status == 502
    assert memo.invoke(json={"message": "back"}).json()["turn"] == 2
    client.apps.delete("status")
    client.apps.delete("memo")


def test_hibernate_fork_and_snapshots(client: Client):
    sbx = client.sandboxes.create(
        idle={"pause_after_s": 300, "hibernate_after_s": 600},
        on_timeout="hibernate",
        timeout_s=900,
        on_resume="echo woke >> /workspace/wakes",
    )
    made = [sbx]
    try:
        assert sbx.info.idle.pause_after_s == 300 and sbx.info.idle.hibernate_after_s == 600
        assert sbx.info.on_timeout == "hibernate" and sbx.info.on_resume.startswith("echo woke")
        sbx.files.write("/workspace/notes.txt", "v1")
        assert sbx.hibernate().state == "hibernated" and sbx.refresh().state == "hibernated"
        assert sbx.exec("cat /workspace/notes.txt").stdout == "v1"  # exec wakes it
        assert sbx.refresh().state == "running"
        assert sbx.hibernate(keep_local=False).state == "hibernated"
        assert sbx.files.read_text("/workspace/notes.txt") == "v1"

        fork = sbx.fork(name=_name("fork"), metadata={"kind": "fork"})
        made.append(fork)
        assert fork.id != sbx.id and fork.info.metadata == {"kind": "fork"}
        assert fork.files.read_text("/workspace/notes.txt") == "v1"

        snap = sbx.snapshot("v1")
        assert isinstance(snap, SnapshotInfo) and snap.name == "v1" and snap.sandbox_id == sbx.id
        sbx.files.write("/workspace/notes.txt", "v2")
        assert [s.id for s in client.snapshots.list()] == [snap.id]
        assert client.snapshots.get(snap.id).name == "v1"
        restored = client.sandboxes.create(snapshot=snap.id)
        made.append(restored)
        assert restored.files.read_text("/workspace/notes.txt") == "v1"
        client.snapshots.delete(snap.id)
        with pytest.raises(NotFound):
            client.snapshots.get(snap.id)
        assert client.snapshots.list() == []
    finally:
        for s in made:
            s.kill(missing_ok=True)


@both_faces
def test_state_kv_and_log(client: Client):
    ns = client.state(_name("ns"))
    assert ns.get("profile") is None
    v1 = ns.put("profile", '{"name": "alice"}', if_none_match=True)
    item = ns.get("profile")
    assert item is not None and item.version == v1 and item.json() == {"name": "alice"} and item.key == "profile"
    with pytest.raises(PreconditionFailed) as lost:
        ns.put("profile", b"{}", if_none_match=True)
    assert lost.value.status == 412 and lost.value.current_version == v1 and lost.value.key == "profile"
    v2 = ns.put("profile", b"\x00binary", if_match=v1)
    assert v2 > v1 and ns.get("profile").value == b"\x00binary"
    with pytest.raises(PreconditionFailed) as stale:
        ns.put("profile", b"late", if_match=v1)
    assert stale.value.current_version == v2
    with pytest.raises(PreconditionFailed):
        ns.delete("profile", if_match=v1)
    assert ns.put("ttl", "soon", ttl_s=60) == 1 and ns.get("ttl").expires_at is not None

    results = ns.batch(
        [{"op": "put", "key": "a", "value": b"\xff"}, {"op": "put", "key": "b", "value": "B"},
         {"op": "check", "key": "profile", "if_match": v2}]
    )  # fmt: skip
    assert [(r.op, r.key) for r in results] == [("put", "a"), ("put", "b"), ("check", "profile")]
    with pytest.raises(PreconditionFailed) as batch:
        ns.batch([{"op": "delete", "key": "a"}, {"op": "put", "key": "b", "value": "x", "if_match": 99}])
    assert batch.value.index == 1 and ns.get("a").value == b"\xff"  # all or nothing

    for i in range(5):
        ns.put(f"memory/{i}", str(i))
    assert [k.key for k in ns.list("memory/", page_size=2)] == [f"memory/{i}" for i in range(5)]
    page = ns.list_page("memory/", limit=3)
    assert len(page.items) == 3 and page.next_cursor
    assert {k.key for k in ns.list()} == {"a", "b", "profile", "ttl", *(f"memory/{i}" for i in range(5))}
    ns.delete("a")
    ns.delete("a")  # idempotent
    assert ns.get("a") is None

    assert ns.append("turn 1", idempotency_key="t1") == 1
    assert ns.append("turn 1", idempotency_key="t1") == 1  # a retry adds nothing
    assert ns.append(b"\x00\x01") == 2
    log = ns.read()
    assert [(e.seq, e.data) for e in log.items] == [(1, b"turn 1"), (2, b"\x00\x01")] and log.last_seq == 2
    assert log.items[0].text == "turn 1"
    started = time.monotonic()
    assert ns.wait(after=2, timeout_s=0.3).items == [] and time.monotonic() - started >= 0.25
    late = threading.Timer(0.3, lambda: client.state(ns.namespace).append("late"))
    late.start()
    got = ns.wait(after=2, timeout_s=10)
    late.join()
    assert [(e.seq, e.text) for e in got.items] == [(3, "late")]
    assert ns.trim(2) == 3 and ns.read().first_seq == 3 and [e.seq for e in ns.read().items] == [3]


def test_state_is_per_tenant(server: Server, client: Client):
    name = _name("shared")
    client.state(name).put("secret", "mine")
    with Client(server.url, server.tenant()[1]) as other:
        assert other.state(name).get("secret") is None
        assert list(other.state(name).list()) == []


def test_async_equivalents(server: Server, tenant_key: str):
    async def main() -> None:
        async with AsyncClient(server.url, tenant_key) as client:
            app = await client.apps.deploy("amemo", **memo_app())
            assert app.version == 1 and [a.name for a in await client.apps.list()] == ["amemo"]
            bob = client.agents("amemo")["bob"]
            assert (await bob.invoke(json={"message": "remember async works"})).json()["turn"] == 1
            async with bob.invoke_stream(json={"message": "recall"}) as stream:
                assert stream.status_code == 200
                body = b"".join([chunk async for chunk in stream])
            assert b"async works" in body
            assert [a.key for a in await client.agents("amemo").list()] == ["bob"]

            sandbox = await bob.sandbox()
            assert (await sandbox.hibernate()).state == "hibernated"
            assert (await bob.info()).state == "hibernated"
            woke = await bob.invoke(json={"message": "recall"})
            assert woke.json()["reply"] == "async works" and (await bob.info()).state == "running"
            fork = await sandbox.fork()
            assert "async works" in await fork.files.read_text("/workspace/memory.json")
            snap = await fork.snapshot("asnap")
            assert [s.id for s in await client.snapshots.list()] == [snap.id]
            await client.snapshots.delete(snap.id)
            await fork.kill()

            ns = client.state(_name("ans"))
            v = await ns.put("k", b"1", if_none_match=True)
            with pytest.raises(PreconditionFailed) as conflict:
                await ns.put("k", b"2", if_match=v + 1)
            assert conflict.value.current_version == v
            assert (await ns.get("k")).value == b"1" and await ns.get("missing") is None
            assert [k.key async for k in ns.list(page_size=1)] == ["k"]
            results = await ns.batch([{"op": "put", "key": "x", "value": "X"}])
            assert results[0].version == 1
            assert await ns.append("e", idempotency_key="i") == await ns.append("e", idempotency_key="i") == 1
            assert [e.data for e in (await ns.read()).items] == [b"e"]
            assert (await ns.wait(after=1, timeout_s=0.2)).items == []
            assert await ns.trim(1) == 2
            await ns.delete("k")
            await client.apps.delete("amemo", state=True)

    asyncio.run(main())
