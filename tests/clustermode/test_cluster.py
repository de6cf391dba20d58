"""Cluster mode end to end, on real processes: placement over three nodes through either
server replica, a node killed with SIGKILL (its sandboxes resume elsewhere from their
checkpoint, every acknowledged state write kept), a drain that moves running sandboxes
and keeps them reachable, and the leader replica killed (another takes over)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from cloche.cluster.etcd import Etcd
from cloche.cluster.local.process import tail, wait_for
from cloche.examples import memo_app
from cloche.fleet.drain import undrain
from tests.clustermode.conftest import CLUSTER_ENV, Cluster

TTL = float(CLUSTER_ENV["CLOCHE_LEASE_TTL_S"])
INTERVAL = float(CLUSTER_ENV["CLOCHE_CHECKPOINT_INTERVAL_S"])



@pytest.fixture(scope="module")
def cluster(isolated_cluster: Cluster) -> Cluster:
    """These tests kill and cut things: a cluster of this module's own."""
    return isolated_cluster

def api(cluster: Cluster, path: str, replica: int = 0) -> Any:
    r = httpx.get(cluster.url(replica) + path, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def node_of(cluster: Cluster, sandbox_id: str, replica: int = 0) -> str:
    return str(api(cluster, f"/v1/sandboxes/{sandbox_id}", replica)["node"])


def test_nodes_are_listed_and_sandboxes_spread_over_them(cluster: Cluster) -> None:
    nodes = wait_for("three nodes listed", lambda: len(api(cluster, "/v1/nodes")["items"]) == 3
                     and api(cluster, "/v1/nodes")["items"], 60)  # fmt: skip
    assert {n["id"] for n in nodes} == {"node-1", "node-2", "node-3"}
    assert all(n["region"] == "local" and n["state"] == "ready" for n in nodes)
    with cluster.client(0) as a, cluster.client(1) as b:
        made = [a.sandboxes.create() for _ in range(3)]
        try:
            # each goes to the node with the most room: three nodes, three sandboxes, one each
            assert {node_of(cluster, s.id) for s in made} == {"node-1", "node-2", "node-3"}
            for s in made:
                # the other replica reaches it too: the records are shared, the nodes are the same
                assert b.sandboxes.get(s.id).exec("echo $((6*7))").stdout == "42\n"
                assert node_of(cluster, s.id, replica=1) == node_of(cluster, s.id)
        finally:
            for s in made:
                s.kill()


def test_a_killed_node_s_sandboxes_resume_elsewhere_with_every_acknowledged_write(cluster: Cluster) -> None:
    with cluster.client(0) as c:
        sb = c.sandboxes.create()
        victim = node_of(cluster, sb.id)
        sb.files.write("/workspace/notes.txt", b"written before the crash")
        written = time.time()
        wait_for("a checkpoint after the write", lambda: cluster.local.checkpoint_at(sb.id) > written, 10 * INTERVAL)
        acknowledged: list[str] = []
        stop = threading.Event()

        def writer() -> None:  # state writes throughout: each one acknowledged must survive
            with cluster.client(1) as w:
                state, i = w.state(f"crash-{sb.id}"), 0
                while not stop.is_set():
                    try:
                        state.put(f"k{i}", str(i))
                        acknowledged.append(f"k{i}")
                    except Exception:  # noqa: BLE001 - an unacknowledged write may be lost
                        pass
                    i += 1
                    time.sleep(0.02)  # within the tenant's rate limit, with room for the test's own calls

        thread = threading.Thread(target=writer)
        thread.start()
        agent = cluster.node(victim)
        try:
            time.sleep(0.5)
            os.kill(agent.child.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            out = wait_for("the sandbox answering on another node",
                           lambda: sb.exec("cat /workspace/notes.txt").stdout, TTL + 60)  # fmt: skip
            took = time.monotonic() - killed
            stop.set()
            thread.join()
            assert out == "written before the crash"
            view = api(cluster, f"/v1/sandboxes/{sb.id}")
            assert view["node"] not in ("", victim) and view["state"] == "running"
            recovery = view["recovery"]
            assert recovery is not None and recovery["checkpoint_at"] >= written
            assert 0 <= recovery["lost_work_s"] <= took + TTL + 10 * INTERVAL
            print(f"resumed on {view['node']} {took:.2f} s after the kill (lease {TTL:g} s)")
            state = c.state(f"crash-{sb.id}")
            assert len(acknowledged) > 10
            assert [k for k in acknowledged if state.get(k) is None] == []
        finally:
            stop.set()
            thread.join()
            cluster.restart_node(victim)  # it comes back, finds its stale copy and removes it
        try:
            wait_for(f"{victim} back", lambda: victim in {n["id"] for n in api(cluster, "/v1/nodes")["items"]}, 120)
        except AssertionError as e:
            raise AssertionError(f"{e}; its log ends:\n{tail(agent.child.log)}") from None
        wait_for(f"{victim}'s stale copy removed",
                 lambda: sb.id not in cluster.runc_ids(victim), 60)  # fmt: skip
        sb.kill()


def test_drain_moves_running_sandboxes_and_they_stay_reachable(cluster: Cluster) -> None:
    with cluster.client(0) as c:
        made = [c.sandboxes.create() for _ in range(3)]
        try:
            for s in made:
                s.files.write("/workspace/id.txt", s.id.encode())
            target = node_of(cluster, made[0].id)
            on_target = [s for s in made if node_of(cluster, s.id) == target]
            drain = subprocess.run(
                [sys.executable, "-m", "cloche.cli", "node", "drain", "--etcd", cluster.local.etcd.endpoint,  # type: ignore[union-attr]
                 "--node-id", target, "--timeout-s", "120"], capture_output=True, text=True, timeout=180)  # fmt: skip
            assert drain.returncode == 0, drain.stderr
            assert f"node {target} drained: {len(on_target)} sandbox(es) moved" in drain.stdout
            listed = {n["id"]: n for n in api(cluster, "/v1/nodes")["items"]}
            assert listed[target]["state"] == "draining" and listed[target]["sandboxes"] == 0
            for s in made:
                assert node_of(cluster, s.id) not in ("", target)
                assert api(cluster, f"/v1/sandboxes/{s.id}")["state"] == "running"
                assert s.files.read("/workspace/id.txt") == s.id.encode()
            fresh = c.sandboxes.create()  # placements avoid the draining node
            made.append(fresh)
            assert node_of(cluster, fresh.id) != target
        finally:
            asyncio.run(_undrain(cluster, target))
            for s in made:
                s.kill()


async def _undrain(cluster: Cluster, node_id: str) -> None:
    async with Etcd(cluster.local.etcd.endpoint) as etcd:  # type: ignore[union-attr]
        await undrain(etcd, node_id)


def test_a_killed_leader_is_replaced_and_placements_and_checkpoints_go_on(cluster: Cluster) -> None:
    async def leader() -> str:
        async with Etcd(cluster.local.etcd.endpoint) as etcd:  # type: ignore[union-attr]
            entry = await etcd.get("election/leader")
            return "" if entry is None else entry.value.decode()

    held = wait_for("a leader", lambda: asyncio.run(leader()), 30)
    port = int(held.split(":")[1])
    index = next(i for i, r in enumerate(cluster.local.replicas) if r.port == port)
    other = 1 - index
    os.kill(cluster.local.replicas[index].child.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    try:
        wait_for("another leader", lambda: asyncio.run(leader()) not in ("", held), TTL + 30)
        with cluster.client(other) as c:
            sb = c.sandboxes.create()
            try:
                assert sb.exec("echo placed").stdout == "placed\n"
                since = time.time()
                wait_for("a checkpoint by the new leader", lambda: cluster.local.checkpoint_at(sb.id) > since,
                         10 * INTERVAL)
            finally:
                sb.kill()
    finally:
        cluster.restart_replica(index)


def test_restart_always_brings_a_lost_node_s_agent_back_without_a_request(cluster: Cluster) -> None:
    with cluster.client(0) as c:
        c.apps.deploy("keeper", **memo_app(), restart="always")
        try:
            c.agents("keeper")["alice"].invoke(json={"message": "remember the cat is called Tom"})
            (agent,) = c.agents("keeper").list()
            remembered = time.time()
            wait_for("a checkpoint", lambda: cluster.local.checkpoint_at(agent.sandbox_id) > remembered, 10 * INTERVAL)
            victim = node_of(cluster, agent.sandbox_id)
            os.kill(cluster.node(victim).child.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            try:
                # nobody asks for it: the leader starts it on another node once the node is lost
                wait_for("the agent running again elsewhere",
                         lambda: api(cluster, f"/v1/sandboxes/{agent.sandbox_id}")["state"] == "running"
                         and node_of(cluster, agent.sandbox_id) not in ("", victim), TTL + 60)  # fmt: skip
            finally:
                cluster.restart_node(victim)
            recalled = c.agents("keeper")["alice"].invoke(json={"message": "recall"}).json()
            assert "Tom" in json.dumps(recalled)
        finally:
            c.apps.delete("keeper", state=True)
