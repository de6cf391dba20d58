"""The pipeline: filters then scorers then the weighted sum then selection; sampling;
the named policies; reservations; explanations."""

from __future__ import annotations

import pytest

from cloche.scheduler import policies
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import ResourceFit
from cloche.scheduler.model import Overcommit, Resources, Taint
from cloche.scheduler.pipeline import Scheduler
from cloche.scheduler.sampling import Sampler
from cloche.scheduler.scorers import BinPack, Spread
from tests.scheduler.helpers import ask, node


def test_filters_then_weighted_scores_pick_the_best():
    a, b, c = node("a"), node("b"), node("c", cpu=1)
    b.allocated = Resources(4, 4096)
    cluster = Cluster([a, b, c])
    s = Scheduler(cluster, [ResourceFit()], [(BinPack(), 1.0)], Sampler(limit=10))
    p = s.place(ask(2, 1024))
    assert p.node is b  # c cannot fit, b is fuller than a
    assert p.feasible == 2 and p.rejected == {"resources: cpu": 1}
    assert p.runner_up is not None and p.score > p.runner_up
    spread = Scheduler(cluster, [ResourceFit()], [(Spread(), 1.0)], Sampler(limit=10))
    assert spread.place(ask(2, 1024)).node is a


def test_weights_are_configuration():
    near_full, far_empty = node("near", region="us"), node("far", region="ap")
    near_full.allocated = Resources(7, 7000)
    cluster = Cluster([near_full, far_empty])
    latency_first = policies.build("cloche", cluster, weights={"binpack": 0, "balance": 0, "usage": 0})
    assert latency_first.place(ask(0.5, 512, region="us")).node is near_full
    spread_first = policies.build("cloche", cluster, weights={"latency": 0, "binpack": 0, "spread": 10})
    assert spread_first.place(ask(0.5, 512, region="us")).node is far_empty
    with pytest.raises(ValueError):
        policies.build("cloche", cluster, weights={"nonsense": 1})
    assert policies.parse_weights("latency=2, binpack=0.5") == {"latency": 2.0, "binpack": 0.5}


def test_no_feasible_node_says_why():
    cluster = Cluster([node("a", cpu=1), node("b", taints=(Taint("gpu"),))])
    p = policies.build("cloche", cluster).place(ask(2, 1024))
    assert p.node is None and not p.ok
    assert p.rejected == {"resources: cpu": 1, "taints: taint gpu": 1}
    assert "no feasible node" in p.reason()


def test_reserve_is_seen_by_the_next_decision_and_release_undoes_it():
    n = node("a", cpu=2, mem=2048)
    cluster = Cluster([n])
    s = policies.build("first-fit", cluster)
    assert s.schedule(ask(1, 1024), "x").node is n
    assert s.schedule(ask(1, 1024), "y").node is n
    assert s.schedule(ask(1, 1024), "z").node is None
    assert cluster.release("x") == Resources(1, 1024)
    assert cluster.node_of("y") is n and cluster.node_of("x") is None
    assert s.schedule(ask(1, 1024), "z").node is n
    assert cluster.release("nope") == Resources()


def test_sampling_log2_candidates_with_rotation():
    nodes = [node(f"n{i}") for i in range(1024)]
    cluster = Cluster(nodes)
    sampler = Sampler()
    assert sampler.limit(1024) == 10 and sampler.limit(3) == 2 and sampler.limit(1) == 1
    assert Sampler(full_scan_below=100).limit(64) == 64 and Sampler(limit=5).limit(1000) == 5
    s = Scheduler(cluster, [ResourceFit()], [(Spread(), 1)], sampler)
    first, second = s.place(ask()), s.place(ask())
    assert first.examined == 10 and second.examined == 10
    assert first.node is not second.node  # the start rotates: consecutive decisions look elsewhere


def test_sampling_visits_locality_holders_and_the_users_region_first():
    nodes = [node(f"us{i}", region="us") for i in range(50)] + [node(f"eu{i}", region="eu") for i in range(50)]
    cluster = Cluster(nodes)
    cluster.hold(cluster.by_id["eu7"], "sb_x")
    order = list(Sampler().scan(cluster, ask(region="us", locality=("sb_x",))))
    assert order[0].id == "eu7"
    assert {n.region for n in order[1:51]} == {"us"}
    assert len(order) == 100 and len({n.id for n in order}) == 100
    p = policies.build("cloche", cluster).place(ask(region="us", locality=("sb_x",)))
    assert p.node.id == "eu7"  # its disk is there: locality outweighs the round trip
    cluster.drop(cluster.by_id["eu7"], "sb_x")
    assert "sb_x" not in cluster.holders


def test_policies_first_fit_random_kubernetes():
    nodes = [node(f"n{i}") for i in range(5)]
    cluster = Cluster(nodes)
    ff = policies.build("first-fit", cluster)
    assert all(ff.schedule(ask(4, 1024), str(i)).node is nodes[i // 2] for i in range(6))
    k8s = policies.build("kubernetes", Cluster([node("x"), node("y")]))
    k8s.cluster.by_id["x"].allocated = Resources(4, 4096)
    assert k8s.place(ask()).node.id == "y"  # least allocated
    rnd = policies.build("random", Cluster([node(f"r{i}") for i in range(8)]), seed=3)
    picks = {rnd.place(ask()).node.id for _ in range(200)}
    assert len(picks) == 8
    with pytest.raises(ValueError):
        policies.build("best", cluster)


def test_explanation_is_complete():
    cluster = Cluster([node("a", region="us"), node("b", region="eu", cpu=0.5)])
    p = policies.build("cloche", cluster).place(ask(1, 512, region="us"))
    e = p.explain()
    assert e["node"] == "a" and e["policy"] == "cloche" and e["feasible"] == 1
    assert e["rejected"] == {"resources: cpu": 1}
    assert set(e["scores"]) == set(policies.CLOCHE_WEIGHTS)
    assert e["scores"]["latency"]["raw"] > 0.9
    assert sum(v["weighted"] for v in e["scores"].values()) == pytest.approx(e["score"], abs=1e-3)
    assert "node a" in e["reason"] and "rejected resources: cpu x1" in e["reason"]


def test_cluster_add_remove():
    a = node("a", local={"sb_1"})
    cluster = Cluster([a])
    with pytest.raises(ValueError):
        cluster.add(node("a"))
    cluster.reserve(a, "k", Resources(1, 1))
    assert cluster.holders == {"sb_1": {"a"}}
    cluster.remove("a")
    assert not cluster.nodes and not cluster.placed and cluster.holders == {"sb_1": set()}


def test_overcommit_resources_json():
    n = node(cpu=2, mem=1000, overcommit=Overcommit(cpu=4))
    j = n.to_json()
    assert j["allocatable"]["cpu"] == 8 and j["overcommit"]["cpu"] == 4
