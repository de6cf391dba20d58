"""kill -9 of the server at random moments under mixed load (create, exec, files, state
writes, hibernate), 20 times (CLOCHE_CRASH_KILLS for a soak). After every restart the server recovers; at the end every
acknowledged sandbox, file and state write is present, SQLite's integrity check passes,
and nothing of the killed server's node (container, mount, cgroup, process) leaks."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from cloche.node import cgroups
from cloche.node.runtime import node_key
from tests.integration.conftest import Server, crash_rounds

KILLS = crash_rounds(20)
# each restart of a server takes ~3.5 s to answer under a full parallel run's load: a soak
# of 50 is ~150 s alone, over the suite's 300 s per test.
pytestmark = pytest.mark.timeout(900)


class Load:
    """Writers that record only what the server acknowledged."""

    def __init__(self, url: str, key: str, sandboxes: list[str], rng: random.Random) -> None:
        self.url, self.key, self.rng = url, key, rng
        self.sandboxes = sandboxes  # sandboxes known to exist (acknowledged creates)
        self.files: dict[tuple[str, str], bytes] = {}
        self.state: dict[str, tuple[int, bytes]] = {}
        self.counter = 0
        self.state_acks = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _next(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {self.key}"}) as c:
            while not self.stop.is_set():
                try:
                    self._one(c)
                except httpx.HTTPError:
                    return  # the server was killed under us: whatever was in flight is unacknowledged

    def _one(self, c: httpx.Client) -> None:
        n = self._next()
        op = self.rng.choice(["create", "exec", "file", "file", "state", "state", "hibernate"])
        if (op == "create" and len(self.sandboxes) < 6) or not self.sandboxes:
            r = c.post("/v1/sandboxes", json={"disk_mb": 64, "memory_mb": 64})
            if r.status_code == 201:
                self.sandboxes.append(r.json()["id"])
            return
        sid = self.rng.choice(self.sandboxes)
        if op == "exec":
            r = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": f"echo {n} > /workspace/e{n} && sync"})
            if r.status_code == 200 and r.json()["exit_code"] == 0:
                self.files[(sid, f"/workspace/e{n}")] = f"{n}\n".encode()
        elif op == "file":
            data = os.urandom(self.rng.randrange(1, 4096))
            r = c.put(f"/v1/sandboxes/{sid}/files", params={"path": f"/workspace/f{n}"}, content=data)
            if r.status_code == 200:
                self.files[(sid, f"/workspace/f{n}")] = data
        elif op == "state":
            key = f"k{self.rng.randrange(20)}"
            value = str(n).encode()
            r = c.put(f"/v1/state/crash/kv/{key}", content=value)
            if r.status_code == 200:
                with self.lock:
                    self.state_acks += 1
                    version = r.json()["version"]
                    if key not in self.state or self.state[key][0] < version:
                        self.state[key] = (version, value)
        else:
            c.post(f"/v1/sandboxes/{sid}/hibernate")


def _until_acknowledged(load: Load, files: int, states: int, timeout_s: float = 60) -> None:
    """Wait until the load has this many more acknowledged files and state writes: on a
    loaded machine a restarted server answers slowly, and a kill before anything was
    acknowledged would prove nothing."""
    want_files, want_states = len(load.files) + files, load.state_acks + states
    deadline = time.monotonic() + timeout_s
    while (len(load.files) < want_files or load.state_acks < want_states) and time.monotonic() < deadline:
        time.sleep(0.02)


def _node_leftovers(key: str) -> list[str]:
    found = [str(p) for p in cgroups.leftovers(f"/cloche/{key}")]
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if f"/run/cloche/{key}/" in line]
    run = Path("/run/cloche") / key
    if run.exists():
        found.append(str(run))
    return found


def test_kill_9_under_mixed_load_loses_nothing_acknowledged(tmp_path):
    server = Server(tmp_path / "data", pool_size=1,
                    env={"CLOCHE_RATE_PER_S": "100000", "CLOCHE_RATE_BURST": "100000"})  # fmt: skip
    server.start()
    rng = random.Random(2026)
    _, key = server.tenant(max_sandboxes=1000)
    load = Load(server.url, key, [], rng)
    try:
        for _ in range(KILLS):
            load.stop.clear()
            workers = [threading.Thread(target=load.run) for _ in range(3)]
            for w in workers:
                w.start()
            _until_acknowledged(load, files=2, states=1)
            time.sleep(rng.uniform(0.1, 0.8))
            server.stop(signal.SIGKILL)
            load.stop.set()
            for w in workers:
                w.join(15)
            server.start()  # raises if the server cannot recover
        with server.client(key) as c:
            listed = {s["id"] for s in c.get("/v1/sandboxes").json()["items"]}
            missing = [sid for sid in load.sandboxes if sid not in listed]
            assert not missing, f"acknowledged sandboxes lost: {missing}"
            for (sid, path), data in load.files.items():
                r = c.get(f"/v1/sandboxes/{sid}/files", params={"path": path})
                assert r.status_code == 200 and r.content == data, f"{sid}:{path} lost or changed"
            for k, (version, value) in load.state.items():
                r = c.get(f"/v1/state/crash/kv/{k}")
                assert r.status_code == 200, k
                assert int(r.headers["ETag"].strip('"')) >= version
                if int(r.headers["ETag"].strip('"')) == version:
                    assert r.content == value
        assert len(load.files) > 30 and len(load.state) > 5, "the load did too little to prove anything"
        with sqlite3.connect(server.data_dir / "cloche.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()
        server.wipe()
    assert _node_leftovers(node_key(server.data_dir)) == []
