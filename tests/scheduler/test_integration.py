"""The scheduler in a real server (`cloche up`, real runc) on a tiny node: 1 GiB of
memory, no memory overcommit, sandboxes idle for 3 s may be hibernated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Server

SMALL_NODE = {
    "CLOCHE_NODE_MEMORY_MB": "1024",
    "CLOCHE_MEMORY_OVERCOMMIT": "1.0",
    "CLOCHE_PREEMPT_IDLE_S": "3",
    "CLOCHE_POOL_AUTOSIZE": "0",
}
ALLOC_200MB = "python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b) >> 20)'"


@pytest.fixture(scope="module")
def small() -> Iterator[Server]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="cloche-sched-") as tmp:
        srv = Server(Path(tmp) / "data", pool_size=0, env=SMALL_NODE)
        srv.start()
        try:
            yield srv
        finally:
            if srv.proc and srv.proc.poll() is None:
                srv.stop()
            srv.wipe()


def _create(c: httpx.Client, **body: object) -> httpx.Response:
    return c.post("/v1/sandboxes", json={"memory_mb": 384, **body})


def _node(srv: Server) -> dict:
    with srv.client() as admin:
        return admin.get("/v1/nodes").json()["items"][0]


def _kill_all(c: httpx.Client) -> None:
    for sb in c.get("/v1/sandboxes").json()["items"]:
        c.delete(f"/v1/sandboxes/{sb['id']}")


def test_full_node_queues_then_hibernates_an_idle_sandbox_and_admits(small: Server):
    _, key = small.tenant()
    with small.client(key) as c:
        node = _node(small)
        assert node["capacity"]["memory_mb"] == 1024 and node["allocatable"]["memory_mb"] == 1024
        a, b = _create(c).json(), _create(c).json()
        assert a["placement"]["node"] == node["id"] and "reason" in a["placement"]
        c.put(f"/v1/sandboxes/{a['id']}/files", params={"path": "/workspace/keep"}, content=b"state")
        result: dict[str, httpx.Response] = {}
        started = time.monotonic()

        def third() -> None:
            with small.client(key) as c3:
                result["r"] = _create(c3, wait_s=30)

        t = threading.Thread(target=third)
        t.start()
        # b stays busy; a, untouched since its file write, becomes the least recently used idle one
        seen_waiting = False
        while t.is_alive() and time.monotonic() - started < 30:
            assert c.post(f"/v1/sandboxes/{b['id']}/exec", json={"cmd": "true"}).status_code == 200
            if not seen_waiting and time.monotonic() - started < 2:
                seen_waiting = _node(small)["queue"]["waiting"] == 1
            time.sleep(0.3)
        t.join()
        waited = time.monotonic() - started
        assert seen_waiting, "the third create should have been queued while the node was full"
        r = result["r"]
        assert r.status_code == 201, r.text
        placement = r.json()["placement"]
        assert placement["preempted"] == [a["id"]], placement
        assert placement["waited_s"] >= 1.0 and waited >= 1.0
        assert "hibernating 1 idle sandbox" in placement["reason"]
        assert c.get(f"/v1/sandboxes/{a['id']}").json()["state"] == "hibernated"
        assert c.get(f"/v1/sandboxes/{b['id']}").json()["state"] == "running"
        assert c.get(f"/v1/sandboxes/{r.json()['id']}").json()["placement"]["preempted"] == [a["id"]]
        # nothing was destroyed: reading a's file wakes it with its state intact ...
        assert c.get(f"/v1/sandboxes/{a['id']}/files", params={"path": "/workspace/keep"}).content == b"state"
        # ... and the wake overfilled the node, so an idle sandbox is hibernated again to fit
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _node(small)["allocated"]["memory_mb"] > 1024:
            time.sleep(0.5)
        assert _node(small)["allocated"]["memory_mb"] <= 1024
        _kill_all(c)


def test_no_room_answers_503_with_retry_after_and_never_preempts_higher_priority(small: Server):
    _, key = small.tenant(priority=5)
    _, low_key = small.tenant(priority=-1)
    with small.client(key) as c, small.client(low_key) as low:
        ids = [_create(c).json()["id"] for _ in range(2)]
        time.sleep(3.5)  # both idle long enough to be hibernated, but of a higher priority
        started = time.monotonic()
        r = _create(low, wait_s=1.5)
        assert r.status_code == 503, r.text
        assert time.monotonic() - started >= 1.4
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "no_capacity"
        assert all(c.get(f"/v1/sandboxes/{i}").json()["state"] == "running" for i in ids)
        too_big = _create(low, memory_mb=2048, wait_s=0)
        assert too_big.status_code == 409 and "no node can ever hold" in too_big.json()["error"]["message"]
        _kill_all(c)
    with small.client() as admin:
        prios = {t["id"]: t["priority"] for t in admin.get("/v1/tenants").json()["items"]}
        assert 5 in prios.values() and -1 in prios.values()


def test_live_resize_up_and_down_is_enforced_inside_and_keeps_processes(small: Server):
    _, key = small.tenant()
    with small.client(key) as c:
        sid = _create(c, memory_mb=128).json()["id"]

        def sh(cmd: str) -> dict:
            r = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": cmd, "timeout_s": 60})
            assert r.status_code == 200, r.text
            return r.json()

        sh("setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > /tmp/sleeper")
        pid = sh("cat /tmp/sleeper")["stdout"].strip()
        assert sh(ALLOC_200MB)["exit_code"] != 0  # 200 MB do not fit in 128 MB

        up = c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 384, "cpu": 0.5})
        assert up.status_code == 200, up.text
        assert (up.json()["memory_mb"], up.json()["cpu"], up.json()["state"]) == (384, 0.5, "running")
        out = sh(ALLOC_200MB)
        assert out["exit_code"] == 0 and out["stdout"].strip() == "200"

        down = c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 128})
        assert down.status_code == 200 and down.json()["memory_mb"] == 128
        assert sh(ALLOC_200MB)["exit_code"] != 0

        assert sh(f"kill -0 {pid} && cat /proc/{pid}/cmdline | tr '\\0' ' '")["stdout"].strip() == "sleep 1000"
        assert c.get(f"/v1/sandboxes/{sid}").json()["memory_mb"] == 128

        # no room on the node: a clear 409, and allow_move cannot help with one node
        r = c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 2000})
        assert r.status_code == 409 and "no room" in r.json()["error"]["message"]
        r = c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 2000, "allow_move": True})
        assert r.status_code == 409 and "no other node fits" in r.json()["error"]["message"]

        # shrinking below what it really uses is refused, and its processes live on
        assert c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 512}).status_code == 200
        sh(
            'setsid python3 -c \'import time; b = bytearray(300 << 20); b[::4096] = b"x" * len(b[::4096]); '
            "time.sleep(1000)' >/dev/null 2>&1 </dev/null & echo $! > /tmp/hog; sleep 1"
        )
        hog = sh("cat /tmp/hog")["stdout"].strip()
        r = c.patch(f"/v1/sandboxes/{sid}", json={"memory_mb": 128})
        assert r.status_code == 409 and r.json()["error"]["code"] == "in_use", r.text
        assert sh(f"kill -0 {hog} && kill -0 {pid} && echo alive")["stdout"].strip() == "alive"
        assert c.get(f"/v1/sandboxes/{sid}").json()["memory_mb"] == 512
        assert c.patch(f"/v1/sandboxes/{sid}", json={"disk_mb": 10}).status_code == 422
        c.delete(f"/v1/sandboxes/{sid}")
