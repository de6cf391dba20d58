"""A cluster whose regions are network namespaces with a 40 ms one-way relay between them
(`cloche cluster local --regions eu,us --inter-region-delay-ms 40`): the nodes measure
the round trip between regions (about 80 ms) and within one (small), the control plane
reads it as its latency matrix, each region's replica places near and serves across the
relay, and a region cut off by an nftables drop rule (its node still running) fences
itself, its sandbox fails over, and the node does not serve the old copy when the link
comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.cluster.etcd import Etcd
from cloche.cluster.local.process import wait_for
from cloche.fleet.rtt import MeasuredLatency
from cloche.node.config import node_key
from cloche.nodeapi.probes import rtt_key
from cloche.scheduler.scorers.latency import LatencyMatrix
from tests.cluster.history import History
from tests.clustermode.conftest import Cluster, running_cluster
from tests.clustermode.test_cluster import api, node_of
from tests.clustermode.test_faults import START_BEAT, beating_and_checkpointed, intervals

DELAY_MS = 40.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """node-1 and node-3 in eu, node-2 alone in us."""
    with running_cluster(regions=("eu", "us"), env={"CLOCHE_RTT_PROBE_INTERVAL_S": "1"}, netns=True,
                         inter_region_delay_ms=DELAY_MS) as c:  # fmt: skip
        yield c


def etcd_rtt(cluster: Cluster) -> dict[str, float]:
    """The published round trips, by key, as the etcd holds them."""
    assert cluster.local.etcd is not None

    async def read() -> dict[str, float]:
        async with Etcd(cluster.local.etcd.endpoint) as etcd:
            found = {}
            for source, target in (("eu", "us"), ("us", "eu"), ("eu", "eu"), ("us", "us")):
                entry = await etcd.get(rtt_key(source, target))
                if entry is not None:
                    found[f"{source}/{target}"] = json.loads(entry.value)["ms"]
            return found

    return asyncio.run(read())


def control_plane_matrix(cluster: Cluster) -> LatencyMatrix:
    assert cluster.local.etcd is not None

    async def read() -> LatencyMatrix:
        async with Etcd(cluster.local.etcd.endpoint) as etcd, MeasuredLatency(etcd, fallback=LatencyMatrix({})) as m:
            return m.matrix

    return asyncio.run(read())


def test_nodes_measure_the_relay_delay_between_regions_and_little_within(cluster: Cluster) -> None:
    measured = wait_for("all four round trips published", lambda: len(etcd_rtt(cluster)) == 4 and etcd_rtt(cluster),
                        60)  # fmt: skip
    for pair in ("eu/us", "us/eu"):
        assert 2 * DELAY_MS <= measured[pair] < 2 * DELAY_MS + 60, measured
    for pair in ("eu/eu", "us/us"):
        assert measured[pair] < 20, measured
    matrix = control_plane_matrix(cluster)
    assert 2 * DELAY_MS <= matrix.rtt("eu", "us") < 2 * DELAY_MS + 60
    assert matrix.rtt("us", "eu") == matrix.rtt("eu", "us")
    assert matrix.rtt("eu", "eu") < 20 and matrix.rtt("us", "us") < 20


def test_nodes_and_replicas_in_region_namespaces_place_near_and_serve_across(cluster: Cluster) -> None:
    nodes = wait_for("three nodes listed", lambda: len(api(cluster, "/v1/nodes")["items"]) == 3
                     and api(cluster, "/v1/nodes")["items"], 60)  # fmt: skip
    assert {n["id"]: n["region"] for n in nodes} == {"node-1": "eu", "node-2": "us", "node-3": "eu"}
    eu, us = cluster.local.region_net("eu"), cluster.local.region_net("us")
    assert cluster.node("node-2").host == us.address  # the node API listens inside the region
    assert cluster.local.replica_addresses() == [(eu.address, cluster.local.replicas[0].port),
                                                 (us.address, cluster.local.replicas[1].port)]  # fmt: skip
    with cluster.client(0) as in_eu, cluster.client(1) as in_us:
        made = [in_eu.sandboxes.create(), in_eu.sandboxes.create(), in_us.sandboxes.create()]
        try:
            assert {node_of(cluster, sb.id) for sb in made[:2]} <= {"node-1", "node-3"}  # each edge places near
            assert node_of(cluster, made[2].id) == "node-2"
            for sb in made:
                sb.files.write("/workspace/hello.txt", b"hi")
                for client in (in_eu, in_us):  # either replica serves it, across the relay or not
                    assert client.sandboxes.get(sb.id).exec("cat /workspace/hello.txt").stdout == "hi"
            far = in_eu.sandboxes.get(made[2].id)
            started = time.monotonic()
            far.exec("true")
            assert time.monotonic() - started >= 2 * DELAY_MS / 1000  # eu's replica to us's node: a round trip
        finally:
            for sb in made:
                sb.kill()


def replica_answers_within(cluster: Cluster, region: str, replica: int, timeout_s: float, probes: int = 5) -> bool:
    """Whether replica `replica` answers /healthz from inside `region`'s namespace within
    `timeout_s`, `probes` times in a row, a second apart."""
    r = cluster.local.replicas[replica]
    probe = f"import urllib.request; urllib.request.urlopen('http://{r.host}:{r.port}/healthz', timeout={timeout_s})"
    for _ in range(probes):
        done = subprocess.run(cluster.local.region_net(region).command([sys.executable, "-c", probe]),
                              capture_output=True, timeout=30)  # fmt: skip
        if done.returncode != 0:
            return False
        time.sleep(1)
    return True


def test_a_region_cut_off_by_nftables_fences_and_its_sandbox_fails_over_once(cluster: Cluster) -> None:
    us = cluster.local.region_net("us")
    node = cluster.node("node-2")
    with cluster.client(1) as in_us:  # us's replica places it near, on node-2
        created = in_us.sandboxes.create(on_resume=START_BEAT)
    assert node_of(cluster, created.id) == "node-2"
    with cluster.client(0) as c:  # and eu's, which the cut leaves connected, serves it from then on
        sb = c.sandboxes.get(created.id)
        try:
            beating_and_checkpointed(cluster, sb)
            upper = Path("/run/cloche") / node_key(node.root) / sb.id / "disk" / "upper" / "workspace" / "beats"

            us.cut()  # node-2 runs on, but nothing reaches it and it reaches nothing
            assert node.child is not None and node.child.alive()
            wait_for("node-2 lost", lambda: node_of(cluster, sb.id) != "node-2", 60)
            wait_for("the sandbox serving again", lambda: sb.exec("true").exit_code == 0, 90)
            # us's replica, cut off from PostgreSQL and etcd with the rest of its region, still
            # answers in its region: no call to PostgreSQL holds its event loop (its fleet
            # refresh, every second, used to wait on the cut until TCP gave up)
            assert replica_answers_within(cluster, "us", 1, timeout_s=2.0)
            moved = node_of(cluster, sb.id)
            assert moved in ("node-1", "node-3")
            wait_for("the new instance's heartbeats",
                     lambda: len(intervals(sb.files.read_text("/workspace/beats"))) >= 2, 30)  # fmt: skip
            old = intervals(upper.read_text())  # the cut-off copy's own record, frozen where it stopped
            new = intervals(sb.files.read_text("/workspace/beats"))
            history = History()
            for instance, (first, last) in {**old, **new}.items():
                history.events += [(first, instance, True), (last, instance, False)]
            assert history.overlaps() == []

            us.mend()  # node-2 comes back: it registers again, and its stale copy goes
            wait_for("node-2 listed again", lambda: "node-2" in {n["id"] for n in api(cluster, "/v1/nodes")["items"]},
                     60)  # fmt: skip
            wait_for("node-2's stale copy removed", lambda: not upper.parent.parent.parent.exists(), 90)
            assert sb.exec("true").exit_code == 0 and node_of(cluster, sb.id) == moved
        finally:
            with contextlib.suppress(RuntimeError):  # mended already, unless the test failed before
                us.mend()
            sb.kill()
