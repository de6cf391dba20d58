"""Cluster faults on real processes: a node cut off from etcd (a relay between it and
etcd is cut) fences itself before another node starts its sandbox, as a checker over
the instances' recorded heartbeats shows; etcd and PostgreSQL restarted under a running
cluster, which recovers without anyone's help."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloche.cluster.local.node import NodeAgent
from cloche.cluster.local.process import free_ports, wait_for
from tests.cluster.history import History
from tests.cluster.relay import Relay
from tests.clustermode.conftest import Cluster
from tests.clustermode.test_cluster import api, node_of

# Each instance of the sandbox appends "<instance id> <time>" every 50 ms while it runs;
# on_resume starts a new instance (with a new id) whenever the sandbox is started again.
BEAT = """id=$(cat /proc/sys/kernel/random/uuid)
while true; do echo "$id $(date +%s.%N)" >> /workspace/beats; sleep 0.05; done
"""
START_BEAT = "setsid sh /workspace/beat.sh </dev/null >/dev/null 2>&1 &"


def beating_and_checkpointed(cluster: Cluster, sb: Any) -> None:
    """Start the heartbeat in `sb` (a created with on_resume=START_BEAT) and return once
    it beats and the leader has checkpointed the sandbox since."""
    sb.files.write("/workspace/beat.sh", BEAT.encode())
    sb.exec(START_BEAT)
    wait_for("heartbeats", lambda: sb.files.read("/workspace/beats").count(b"\n") > 5, 30)
    since = time.time()
    wait_for("a checkpoint", lambda: cluster.local.checkpoint_at(sb.id) > since, 30)


class RelayThread:
    """tests/cluster/relay.py's relay on an event loop of its own, for a sync test."""

    def __init__(self, target: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.relay = self._run(Relay(target).start())
        self.open = True

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def endpoint(self) -> str:
        return str(self.relay.endpoint)

    def cut(self) -> None:
        self._run(self.relay.cut())
        self.open = False

    def mend(self) -> None:
        if not self.open:
            self._run(self.relay.mend())
            self.open = True

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture()
def partitionable(cluster: Cluster) -> Iterator[tuple[NodeAgent, RelayThread]]:
    """A fourth node that reaches etcd only through a relay the test can cut."""
    assert cluster.local.etcd is not None
    relay = RelayThread(cluster.local.etcd.endpoint)
    agent = NodeAgent("node-p", "local", cluster.local.root / "node-p", free_ports(1)[0])
    agent.spawn(cluster.local.root / "cluster", relay.endpoint, cluster.env(), "kill", 0)
    try:
        agent.wait_ready()
        wait_for("node-p listed", lambda: "node-p" in {n["id"] for n in api(cluster, "/v1/nodes")["items"]}, 60)
        yield agent, relay
    finally:
        with contextlib.suppress(OSError):
            relay.mend()  # so that node-p can leave etcd as it stops
        agent.stop()
        relay.close()



@pytest.fixture(scope="module")
def cluster(isolated_cluster: Cluster) -> Cluster:
    """These tests kill and cut things: a cluster of this module's own."""
    return isolated_cluster

def intervals(lines: str) -> dict[str, tuple[float, float]]:
    """Each instance's first and last heartbeat."""
    seen: dict[str, tuple[float, float]] = {}
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # a line cut short by the freeze or the checkpoint
        instance, at = parts[0], float(parts[1])
        first, last = seen.get(instance, (at, at))
        seen[instance] = (min(first, at), max(last, at))
    return seen


def test_a_partitioned_node_fences_before_another_node_serves_its_sandbox(
    cluster: Cluster, partitionable: tuple[NodeAgent, RelayThread]
) -> None:
    agent, relay = partitionable
    with cluster.client(0) as c:
        made = []
        while not made or node_of(cluster, made[-1].id) != "node-p":  # the emptiest node: node-p soon
            assert len(made) < 5, "no sandbox was placed on the empty node-p"
            made.append(c.sandboxes.create(on_resume=START_BEAT))
        sb = made.pop()
        for other in made:
            other.kill()
        try:
            beating_and_checkpointed(cluster, sb)
            upper = Path("/run/cloche") / _key(agent) / sb.id / "disk" / "upper" / "workspace" / "beats"

            relay.cut()  # node-p still runs and answers the servers, but cannot renew its lease
            # until its lease expires node-p may serve it (it still holds its claim); then it is lost
            wait_for("node-p lost", lambda: node_of(cluster, sb.id) != "node-p", 60)
            wait_for("the sandbox serving again", lambda: sb.exec("true").exit_code == 0, 90)  # the exec wakes it
            moved = node_of(cluster, sb.id)
            assert moved not in ("", "node-p")
            beats = "/workspace/beats"
            wait_for("the new instance's heartbeats", lambda: len(intervals(sb.files.read_text(beats))) >= 2, 30)
            old = intervals(upper.read_text())  # the cut-off copy's own record, frozen where it stopped
            new = intervals(sb.files.read_text("/workspace/beats"))
            history = History()
            for instance, (first, last) in {**old, **new}.items():
                history.events += [(first, instance, True), (last, instance, False)]
            assert len({**old, **new}) >= 2
            assert history.overlaps() == []
            (old_id,) = old  # one instance ran on node-p; it stopped before the new one began
            newest = max((span for i, span in new.items() if i != old_id), key=lambda s: s[0])
            assert old[old_id][1] < newest[0]

            relay.mend()  # node-p comes back, and its stale copy goes
            wait_for("node-p's stale copy removed", lambda: not upper.parent.parent.parent.exists(), 90)
            assert sb.exec("true").exit_code == 0 and node_of(cluster, sb.id) == moved
        finally:
            sb.kill()


def _key(agent: NodeAgent) -> str:
    from cloche.node.config import node_key

    return node_key(agent.root)


def test_etcd_and_postgresql_restart_and_the_cluster_recovers(cluster: Cluster) -> None:
    assert cluster.local.etcd is not None and cluster.local.postgres is not None
    with cluster.client(0) as c:
        sb = c.sandboxes.create()
        try:
            sb.files.write("/workspace/kept.txt", b"kept")
            cluster.local.etcd.restart()
            wait_for("three nodes listed again", lambda: len(api(cluster, "/v1/nodes")["items"]) == 3, 60)
            assert wait_for("the sandbox answering", lambda: sb.files.read("/workspace/kept.txt"), 60) == b"kept"
            fresh = c.sandboxes.create()
            assert fresh.exec("echo after-etcd").stdout == "after-etcd\n"
            fresh.kill()

            cluster.local.postgres.stop()
            # while it is down: a short 503 to try again, not a 500 or a wait
            down = httpx.get(cluster.url(0) + "/v1/sandboxes", headers={"Authorization": f"Bearer {cluster.key}"},
                             timeout=30)  # fmt: skip
            assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable", down.text
            assert down.headers["Retry-After"] == "1"
            cluster.local.postgres.start()
            state = c.state(f"pg-{sb.id}")
            wait_for("a state write", lambda: state.put("k", "v") or True, 60)
            assert state.get("k") is not None and state.get("k").value == b"v"  # type: ignore[union-attr]
            again = wait_for("a create", lambda: c.sandboxes.create(), 60)
            assert again.exec("echo after-pg").stdout == "after-pg\n"
            again.kill()
            assert sb.files.read("/workspace/kept.txt") == b"kept"
        finally:
            sb.kill()
