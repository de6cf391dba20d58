"""Measured round trips as placement sees them: a pair measured both ways is the mean of
the two, measured pairs replace the configured figures and the rest are kept, records
that are not a probe's are ignored, and each node probes one node per region (another
node of its own region when there is one)."""

from __future__ import annotations

import json

from cloche.cluster.etcd import Entry
from cloche.cluster.membership import NodeInfo
from cloche.fleet.rtt import matrix_of, measured_rtt
from cloche.nodeapi.probes import rtt_key, targets
from cloche.scheduler.scorers.latency import LatencyMatrix


def probe(source: str, target: str, ms: float) -> Entry:
    return Entry(rtt_key(source, target), json.dumps({"ms": ms}).encode(), 1, 1, 0)


def test_both_directions_average_and_garbage_is_ignored() -> None:
    entries = [probe("eu", "us", 80), probe("us", "eu", 90), probe("eu", "eu", 2),
               Entry(rtt_key("ap", "eu"), b"not json", 1, 1, 0)]  # fmt: skip
    assert measured_rtt(entries) == {("eu", "us"): 85.0, ("eu", "eu"): 2.0}


def test_measured_pairs_replace_configured_ones_and_the_rest_stay() -> None:
    configured = LatencyMatrix({("eu", "us"): 80, ("us", "ap"): 160}, unknown_ms=120)
    matrix = matrix_of({("eu", "us"): 42.0, ("eu", "eu"): 1.5}, configured)
    assert matrix.rtt("us", "eu") == 42.0
    assert matrix.rtt("eu", "eu") == 1.5
    assert matrix.rtt("ap", "us") == 160.0
    assert matrix.rtt("eu", "ap") == 120.0  # neither measured nor configured


def test_one_target_per_region_preferring_another_node_of_ones_own() -> None:
    def node(region: str, port: int) -> NodeInfo:
        return NodeInfo(address=f"https://10.0.0.1:{port}", capacity=1, region=region)

    nodes = {"n1": node("eu", 1), "n2": node("us", 2), "n3": node("eu", 3), "n4": node("us", 4)}
    assert {r: n.address for r, n in targets(nodes, "n1").items()} == {"eu": nodes["n3"].address,
                                                                       "us": nodes["n2"].address}  # fmt: skip
    alone = {"n1": node("eu", 1), "n2": node("us", 2)}
    assert targets(alone, "n1")["eu"] == alone["n1"]  # no other node in eu: itself
