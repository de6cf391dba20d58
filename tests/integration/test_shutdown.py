"""Stopping `cloche up` as supervisors do (SIGTERM to the process, or to its whole
process group; a second signal to hurry it): exit 0, every sandbox brought to a safe
state, nothing of the node left on the host, and after a restart every sandbox wakes
with its files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from cloche.config import Settings
from cloche.node import orphans
from cloche.node.runtime import node_key
from cloche.server.kvfast import KvFastPath
from cloche.server.shutdown import Drain, DrainGate
from tests.integration.conftest import Server

RUN_ROOT = Path("/run/cloche")


def leftovers(data_dir: Path) -> dict[str, list[str]]:
    """Everything of the node on `data_dir` still on the host (all lists empty: nothing).
    Only its own: other tests' nodes may run meanwhile (the serial phase's other lane)."""
    key = node_key(data_dir)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    loops = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            backing = (dev / "loop" / "backing_file").read_text()
        except OSError:
            continue
        if f"/{key}/" in backing or backing.startswith(f"{data_dir}/"):
            loops.append(dev.name)
    return {
        "containers": orphans.containers(RUN_ROOT, key),
        "mounts": orphans.mounts_under(RUN_ROOT / key),
        "cgroups": list(orphans.cgroup_paths(key)),
        "links": [line for line in links.splitlines() if f"cloche:{key}:" in line],
        "tables": [line for line in tables.splitlines() if f"cloche_{key}" in line],
        "loops": loops,
        "run dir": [str(RUN_ROOT / key)] if (RUN_ROOT / key).exists() else [],
    }


def clean(data_dir: Path) -> bool:
    return not any(leftovers(data_dir).values())


def make_sandboxes(server: Server, key: str, n: int) -> list[str]:
    ids = []
    with server.client(key) as c:
        for i in range(n):
            r = c.post("/v1/sandboxes", json={})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            put = c.put(f"/v1/sandboxes/{sid}/files?path=/workspace/note", content=f"note {i}".encode())
            assert put.status_code < 300, put.text
            ids.append(sid)
    return ids


def check_files_after_restart(server: Server, key: str, ids: list[str]) -> None:
    server.start()
    with server.client(key) as c:
        for i, sid in enumerate(ids):
            r = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "cat /workspace/note"})
            assert r.status_code == 200 and r.json()["stdout"] == f"note {i}", r.text


def test_sigterm_drains_hibernates_and_exits_0(tmp_path):
    server = Server(tmp_path / "data", pool_size=1, env={"CLOCHE_SHUTDOWN_GRACE_S": "20"})
    server.start()
    node = server.data_dir
    _, key = server.tenant()
    try:
        ids = make_sandboxes(server, key, 10)
        in_flight: dict[str, object] = {}

        def slow_request() -> None:
            with server.client(key) as c:
                r = c.post(f"/v1/sandboxes/{ids[0]}/exec", json={"cmd": "sleep 1.5; echo finished"})
                in_flight["status"], in_flight["stdout"] = r.status_code, r.json().get("stdout")

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        worker.join(10)
        assert in_flight == {"status": 200, "stdout": "finished\n"}  # the request in flight finished
        assert time.monotonic() - started < 20
        assert "hibernating 10 sandboxes: 10/10" in server.log.read_text()
        assert leftovers(node) == {k: [] for k in leftovers(node)}
        check_files_after_restart(server, key, ids)
    finally:
        server.stop(signal.SIGKILL)
        server.wipe()
    assert clean(node)


def test_sigterm_to_the_process_group_behaves_the_same(tmp_path):
    server = Server(tmp_path / "data", pool_size=1)
    server.start()
    node = server.data_dir
    _, key = server.tenant()
    try:
        ids = make_sandboxes(server, key, 3)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGTERM)  # as systemd (KillMode=control-group), docker, kubelet
        assert server.proc.wait(30) == 0
        assert clean(node), leftovers(node)
        check_files_after_restart(server, key, ids)
    finally:
        server.stop(signal.SIGKILL)
        server.wipe()
    assert clean(node)


def test_a_second_signal_forces_a_fast_exit_that_still_cleans_up(tmp_path):
    server = Server(tmp_path / "data", pool_size=1)
    server.start()
    node = server.data_dir
    _, key = server.tenant()
    try:
        ids = make_sandboxes(server, key, 10)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.15)  # the drain has begun
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert "forcing exit" in server.log.read_text()
        assert clean(node), leftovers(node)
        check_files_after_restart(server, key, ids)  # stopped or hibernated: the files are kept either way
    finally:
        server.stop(signal.SIGKILL)
        server.wipe()
    assert clean(node)


def test_draining_answers_503_with_retry_after():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    drain = Drain()

    async def two_requests() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=DrainGate(app, drain))
        async with httpx.AsyncClient(transport=transport, base_url="http://cloche") as c:
            before = await c.get("/v1/sandboxes")
            drain.draining = True
            return before, await c.get("/v1/sandboxes")

    before, during = asyncio.run(two_requests())
    assert before.status_code == 200
    assert during.status_code == 503 and during.headers["retry-after"] == "5"
    assert during.json()["error"]["code"] == "shutting_down"


def test_draining_refuses_the_kv_fast_path_too():
    """The KV fast path answers before the drain gate, so it must hand draining requests
    to it (as it is installed in create_app: outermost)."""

    async def app(scope, receive, send):
        raise AssertionError("a drained request reached the app")

    drain = Drain(draining=True)

    async def put() -> httpx.Response:
        gate = KvFastPath(DrainGate(app, drain), Settings(), drain)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://cloche") as c:
            return await c.put("/v1/state/ns/kv/k", content=b"v", headers={"Authorization": "Bearer x"})

    r = asyncio.run(put())
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
