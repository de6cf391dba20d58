"""One test group per scorer: each rates in [0, 1] and ranks nodes the way it should."""

from __future__ import annotations

import pytest

from cloche.scheduler.model import Resources, Taint, Toleration
from cloche.scheduler.scorers import (
    Balance,
    BinPack,
    LabelAffinity,
    Latency,
    LatencyMatrix,
    LiveUsage,
    Locality,
    Spread,
    TaintPreference,
    WarmPool,
)
from tests.scheduler.helpers import ask, node


def _full(frac_cpu: float, frac_mem: float, name: str = "n"):
    n = node(name, cpu=10, mem=10_000)
    n.allocated = Resources(10 * frac_cpu, 10_000 * frac_mem)
    return n


def test_binpack_prefers_fuller_and_spread_emptier():
    a = ask(1, 1000)
    empty, half = _full(0, 0), _full(0.5, 0.5)
    assert BinPack().score(half, a) > BinPack().score(empty, a)
    assert Spread().score(empty, a) > Spread().score(half, a)
    assert BinPack().score(empty, a) == pytest.approx(0.1)
    assert BinPack().score(empty, a) + Spread().score(empty, a) == pytest.approx(1.0)
    assert BinPack().score(_full(1, 1), a) == 1.0  # clamped


def test_balance_prefers_equal_fractions():
    b = Balance()
    a = ask(1, 1000)
    assert b.score(_full(0.2, 0.2), a) == pytest.approx(1.0)
    assert b.score(_full(0.8, 0.1), a) < b.score(_full(0.4, 0.3), a)
    assert 0.0 <= b.score(_full(0.9, 0.0), ask(1, 0)) <= 1.0


def test_warm_pool_hit():
    n = node()
    assert WarmPool().score(n, ask(template="python")) == 0.0
    n.pools = {"python": 2, "node": 0}
    assert WarmPool().score(n, ask(template="python")) == 1.0
    assert WarmPool().score(n, ask(template="node")) == 0.0


def test_locality_of_upper_layer_or_snapshot():
    n = node(local={"sb_1", "snap_a"})
    s = Locality()
    assert s.neutral(ask()) == 0.0
    assert s.score(n, ask(locality=("sb_1",))) == 1.0
    assert s.score(n, ask(locality=("sb_1", "snap_b"))) == 0.5
    assert s.score(n, ask(locality=("sb_2",))) == 0.0


def test_latency_from_the_matrix_and_the_region_hint():
    m = LatencyMatrix({("us", "us"): 2, ("us", "eu"): 80, ("us", "ap"): 160, ("eu", "ap"): 200})
    s = Latency(m)
    a = ask(region="us")
    scores = {r: s.score(node(region=r), a) for r in ("us", "eu", "ap", "mars")}
    assert scores["us"] > scores["eu"] > scores["ap"] >= 0
    assert scores["mars"] == pytest.approx(1 - 100 / 200)  # unknown pairs cost unknown_ms
    assert s.neutral(ask()) == 1.0 and s.score(node(region="ap"), ask()) == 1.0
    assert m.rtt("eu", "us") == 80  # symmetric
    assert LatencyMatrix.parse("us-eu=80, eu-eu=3").rtt("eu", "eu") == 3


def test_live_usage_prefers_quiet_nodes():
    s = LiveUsage()
    busy, quiet = node("a", cpu=10, mem=1000), node("b", cpu=10, mem=1000)
    busy.usage = Resources(9, 100)
    quiet.usage = Resources(1, 200)
    assert s.score(quiet, ask()) == pytest.approx(0.8)
    assert s.score(busy, ask()) == pytest.approx(0.1)


def test_label_affinity_and_taint_preference():
    n = node(labels={"zone": "a", "disk": "ssd"})
    assert LabelAffinity().score(n, ask()) == 1.0
    assert LabelAffinity().score(n, ask(affinity={"zone": "a", "disk": "hdd"})) == 0.5
    spot = node(taints=(Taint("spot", "", "PreferNoSchedule"),))
    assert TaintPreference().score(spot, ask()) == 0.0
    assert TaintPreference().score(spot, ask(tolerations=(Toleration("spot"),))) == 1.0
    assert TaintPreference().score(node(), ask()) == 1.0
