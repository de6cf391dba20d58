"""Failover time: kill -9 the node that holds a sandbox, then time until that sandbox
answers an exec again, which it does on another node once the node's lease has expired
and the next request resumes it from its last checkpoint. Each trial restarts the killed
node and waits until it is back in the fleet, so every trial starts from three nodes.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
from cluster_rig import Rig
from results import Goal, Result, env_int, latency_results, log

from cloche.cluster.local.process import wait_for

T_FAILOVER = "Cluster mode: failover after kill -9 of a node"
MARK = "written before the crash"


def _answer(http: httpx.Client, sid: str) -> str:
    """The sandbox's file, read by an exec ("" while it cannot answer)."""
    try:
        r = http.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["cat", "/workspace/mark"]}, timeout=30)
    except httpx.HTTPError:
        return ""
    return str(r.json().get("stdout", "")) if r.status_code == 200 else ""


def _trial(rig: Rig, http: httpx.Client) -> tuple[float, str, str]:
    """(seconds from the kill to the answer, the killed node, the node that answered)."""
    sid = http.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
    try:
        r = http.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", f"echo -n '{MARK}' > /workspace/mark"]})
        r.raise_for_status()
        written = time.time()
        wait_for("a checkpoint after the write", lambda: rig.local.checkpoint_at(sid) > written, 60)
        victim = rig.node_of(http, sid)
        agent = next(a for a in rig.local.nodes if a.name == victim)
        assert agent.child is not None
        os.kill(agent.child.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for("the sandbox answering elsewhere", lambda: _answer(http, sid) == MARK, rig.lease_s + 120, every=0.05)
        took = time.monotonic() - killed
        return took, victim, rig.node_of(http, sid)
    finally:
        for agent in rig.local.nodes:
            if agent.crashed():
                rig.local.restart_node(agent.name)
        wait_for("every node back", lambda: len(rig.live_nodes(http)) == len(rig.local.nodes), 120, every=0.2)
        http.delete(f"/v1/sandboxes/{sid}")


def failover_results(rig: Rig) -> list[Result]:
    n = env_int("BENCH_CLUSTER_FAILOVERS", 5)
    samples, moves = [], []
    with rig.client() as http:
        for i in range(n):
            took, victim, answered = _trial(rig, http)
            log(f"cluster: failover {i + 1}/{n}: {victim} killed, answered on {answered} after {took:.2f} s")
            samples.append(took)
            moves.append(f"{victim} -> {answered}")
    goal = rig.lease_s + 2
    margin = os.environ["CLOCHE_LEASE_MARGIN_S"]
    out = latency_results("cluster.failover", T_FAILOVER, "kill -9 to the sandbox answering on another node",
                          samples, percentiles=(50,), goals={50: Goal("<=", goal)},
                          note=f"Lease {rig.lease_s:g} s (nodes fence {margin} s before it expires), checkpoints "
                          f"every 2 s; goal p50 <= lease + 2 s = {goal:g} s. Moves: {', '.join(moves)}.")  # fmt: skip
    out.append(Result("cluster.failover.max", T_FAILOVER, "kill -9 to answering, slowest trial", max(samples), "s"))
    for r in out:
        r.unit = "s"
    return out
