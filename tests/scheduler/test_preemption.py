"""Preemption by hibernation: who may be put to sleep, and where."""

from __future__ import annotations

from cloche.scheduler import policies
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.model import Resources
from cloche.scheduler.preemption import Victim, eligible, plan, reclaim
from tests.scheduler.helpers import ask, node

NOW = 10_000.0


def v(key: str, node_id: str = "a", prio: int = 0, idle_s: float = 600, cpu: float = 1, mem: float = 1024,
      used: float = 100) -> Victim:  # fmt: skip
    return Victim(key, node_id, Resources(cpu, mem), prio, NOW - idle_s, used)


def test_eligible_is_idle_lower_or_equal_priority_lru_first():
    vs = [v("recent", idle_s=5), v("old", idle_s=900), v("older", idle_s=1000), v("vip", prio=3, idle_s=5000)]
    assert [x.key for x in eligible(vs, priority=0, now=NOW, idle_s=60)] == ["older", "old"]
    assert [x.key for x in eligible(vs, priority=3, now=NOW, idle_s=60)] == ["vip", "older", "old"]


def test_plan_picks_the_fewest_least_recently_used_victims():
    a, b = node("a", cpu=4, mem=4096), node("b", cpu=4, mem=4096)
    cluster = Cluster([a, b])
    for n in (a, b):
        n.allocated = Resources(4, 4096)
    s = policies.build("cloche", cluster)
    assert s.place(ask(2, 2048)).node is None
    victims = {"a": [v("a1", "a", idle_s=700), v("a2", "a", idle_s=800)],
               "b": [v("b1", "b", cpu=2, mem=2048, idle_s=100)]}  # fmt: skip
    p = plan(s, ask(2, 2048), victims, NOW, idle_s=60)
    assert p is not None and p.node is b and [x.key for x in p.victims] == ["b1"]
    p = plan(s, ask(2, 2048), {"a": victims["a"]}, NOW, idle_s=60)
    assert p.node is a and [x.key for x in p.victims] == ["a2", "a1"]
    assert plan(s, ask(2, 2048), {"a": victims["a"]}, NOW, idle_s=750) is None  # a1 is not idle long enough


def test_plan_never_touches_higher_priority():
    a = node("a", cpu=2, mem=2048)
    a.allocated = Resources(2, 2048)
    s = policies.build("cloche", Cluster([a]))
    victims = {"a": [v("vip", prio=5, cpu=2, mem=2048)]}
    assert plan(s, ask(1, 1024, priority=4), victims, NOW, 60) is None
    assert plan(s, ask(1, 1024, priority=5), victims, NOW, 60).victims[0].key == "vip"


def test_plan_respects_the_other_filters():
    a = node("a", cpu=2, mem=2048, region="eu")
    a.allocated = Resources(2, 2048)
    s = policies.build("cloche", Cluster([a]))
    assert plan(s, ask(1, 1024, regions=("us",)), {"a": [v("x", cpu=2, mem=2048)]}, NOW, 60) is None


def test_reclaim_frees_usage_lowest_priority_then_lru():
    n = node("a")
    vs = [v("p1", prio=1, idle_s=900, used=500), v("p0new", idle_s=100, used=300), v("p0old", idle_s=800, used=300),
          v("busy", idle_s=1)]  # fmt: skip
    got = reclaim(n, vs, NOW, 60, need_mb=400, need_alloc=Resources())
    assert [x.key for x in got] == ["p0old", "p0new"]
    got = reclaim(n, vs, NOW, 60, need_mb=0, need_alloc=Resources(2.5, 0))
    assert [x.key for x in got] == ["p0old", "p0new", "p1"]
    assert reclaim(n, vs, NOW, 60, 0, Resources()) == []
