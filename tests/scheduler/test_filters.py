"""One test group per feasibility filter."""

from __future__ import annotations

import time

from cloche.scheduler.filters import (
    LabelConstraint,
    NodeReady,
    RegionConstraint,
    ResourceFit,
    TaintToleration,
    UsageHeadroom,
)
from cloche.scheduler.model import Overcommit, Resources, Taint, Toleration
from tests.scheduler.helpers import ask, node


def test_resource_fit_checks_every_dimension():
    f = ResourceFit()
    n = node(cpu=4, mem=4096, disk=1000)
    assert f.check(n, ask(4, 4096)) is None
    assert f.check(n, ask(4.5, 1024)) == "cpu"
    assert f.check(n, ask(1, 4097)) == "memory"
    assert f.check(n, ask(1, 1024, disk=1001)) == "disk"
    n.allocated = Resources(3, 3072)
    assert f.check(n, ask(1, 1024)) is None
    assert f.check(n, ask(1.5, 512)) == "cpu"


def test_resource_fit_counts_overcommit_but_never_for_gpus():
    f = ResourceFit()
    n = node(cpu=4, mem=4096, overcommit=Overcommit(cpu=4, memory_mb=1.5))
    assert n.allocatable.cpu == 16 and n.allocatable.memory_mb == 6144
    assert f.check(n, ask(16, 6144)) is None
    assert f.check(n, ask(16, 6145)) == "memory"
    g = node(overcommit=Overcommit(cpu=4, memory_mb=4))
    g.capacity = Resources(8, 8192, 1000, gpus=1)
    g.refresh()
    assert f.check(g, ask(1, 1024, disk=0)) is None
    from cloche.scheduler.model import Ask

    assert f.check(g, Ask(Resources(1, 1, 0, 2))) == "gpus"


def test_usage_headroom_is_live_feedback():
    f = UsageHeadroom(high_water=0.8, expected=0.25)
    n = node(mem=1000, overcommit=Overcommit(memory_mb=4))
    assert f.check(n, ask(1, 3000)) is None  # the request is overcommitted; little is used
    n.usage = Resources(0, 700)
    assert f.check(n, ask(1, 500)) == "memory in use"  # 700 + 125 > 800
    assert f.check(n, ask(1, 200)) is None  # 700 + 50 <= 800


def test_label_constraint_requires_every_label_with_alternatives():
    f = LabelConstraint()
    n = node(labels={"zone": "b", "disk": "ssd"})
    assert f.check(n, ask()) is None
    assert f.check(n, ask(constraints={"zone": "b", "disk": "ssd"})) is None
    assert f.check(n, ask(constraints={"zone": "a|b"})) is None
    assert f.check(n, ask(constraints={"zone": "a"})) == "label zone"
    assert f.check(n, ask(constraints={"gpu": "yes"})) == "label gpu"


def test_region_constraint():
    f = RegionConstraint()
    assert f.check(node(region="eu"), ask()) is None
    assert f.check(node(region="eu"), ask(regions=("eu", "us"))) is None
    assert f.check(node(region="ap"), ask(regions=("eu", "us"))) == "region"


def test_taints_need_tolerations_and_prefer_taints_are_not_filtered():
    f = TaintToleration()
    n = node(taints=(Taint("gpu", "true"),))
    assert f.check(n, ask()) == "taint gpu"
    assert f.check(n, ask(tolerations=(Toleration("gpu"),))) is None
    assert f.check(n, ask(tolerations=(Toleration("gpu", "false"),))) == "taint gpu"
    assert f.check(n, ask(tolerations=(Toleration("gpu", "true", "NoSchedule"),))) is None
    soft = node(taints=(Taint("spot", "", "PreferNoSchedule"),))
    assert f.check(soft, ask()) is None


def test_node_ready_draining_heartbeat_and_exclusion():
    f = NodeReady(heartbeat_timeout_s=10)
    n = node()
    assert f.check(n, ask()) is None
    assert f.check(n, ask(exclude=frozenset({"n1"}))) == "excluded"
    n.draining = True
    assert f.check(n, ask()) == "draining"
    n.draining, n.ready = False, False
    assert f.check(n, ask()) == "not ready"
    n.ready = True
    n.heartbeat_at = time.time() - 60
    assert f.check(n, ask()) == "no heartbeat"
    assert NodeReady(None).check(n, ask()) is None
