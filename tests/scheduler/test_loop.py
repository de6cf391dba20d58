"""The decision loop the server and `cloche sim` share, in a small world of its own:
creates wait fairly, quotas count what is in flight, an idle sandbox is hibernated to
make room, and the control plane answers each refusal with the status it always had."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from cloche.control.errors import ApiError, scheduler_errors
from cloche.scheduler import policies
from cloche.scheduler.admission import Quota, QuotaLedger, TenantUsage
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.errors import InsufficientCapacity, InUse, NoCapacity, QuotaExceeded
from cloche.scheduler.loop import AdmissionLoop, LoopConfig, Waiter
from cloche.scheduler.model import Node
from cloche.scheduler.pipeline import Placement
from cloche.scheduler.preemption import Victim
from tests.scheduler.helpers import ask, node

QUOTA = Quota(max_sandboxes=10, max_cpu=4, max_memory_mb=4096)


class Little:
    """One 2 cpu / 2 GiB node, a clock that moves when told, sandboxes as dict entries."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.node = node("n", cpu=2, mem=2048)
        self.cluster = Cluster([self.node])
        self.ledger = QuotaLedger()
        self.running: dict[str, tuple[Waiter, float]] = {}  # key -> (waiter, last active)
        self.asleep: list[str] = []
        self.pending: list[Waiter] = []  # preemptions in flight
        cfg = LoopConfig(idle_s=60, retry_s=1)
        self.loop: AdmissionLoop[Waiter] = AdmissionLoop(policies.build("cloche", self.cluster), self,
                                                         lambda: self.now, cfg)  # fmt: skip

    def placed(self, waiter: Waiter, placement: Placement) -> None:
        self.loop.finish(waiter)
        self.ledger.activate(waiter.ask.tenant, waiter.ask.resources, new=True)
        self.running[waiter.key] = (waiter, self.now)

    def victims(self, max_priority: float, node_ids: Iterable[str] | None = None) -> dict[str, list[Victim]]:
        vs = [Victim(k, "n", w.ask.resources, w.ask.priority, t) for k, (w, t) in self.running.items()
              if w.ask.priority <= max_priority]  # fmt: skip
        return {"n": vs}

    def hibernate(self, victims: list[Victim], waiter: Waiter | None) -> None:
        for v in victims:
            w, _ = self.running.pop(v.key)
            self.cluster.release(v.key)
            self.ledger.deactivate(w.ask.tenant, w.ask.resources)
            self.asleep.append(v.key)
        if waiter is not None:
            self.pending.append(waiter)

    def quota_usage(self, tenant: str) -> TenantUsage:
        return self.ledger.of(tenant)

    def pool_targets(self, node: Node, targets: dict[str, int]) -> None:
        pass

    def create(self, key: str, cpu: float, tenant: str = "t", priority: int = 0) -> Waiter:
        w = Waiter(ask(cpu, cpu * 1024, tenant=tenant, priority=priority), key, self.now)
        self.loop.submit(w, QUOTA)
        return w

    def finish_preemptions(self) -> None:
        for w in self.pending:
            self.loop.freed(self.node)
            self.loop.preempted(w, self.asleep)
        self.pending.clear()


def test_a_full_node_queues_then_hibernates_the_idle_sandbox_and_admits():
    world = Little()
    world.create("a", 1)
    world.create("b", 1)
    assert set(world.running) == {"a", "b"} and world.node.allocated.cpu == 2
    world.now += 30
    c = world.create("c", 1)
    assert c in world.loop.queue and not world.asleep  # a and b are not idle long enough yet
    world.now += 40
    world.running["b"] = (world.running["b"][0], world.now)  # b is busy
    world.loop.tick()
    assert world.asleep == ["a"] and c.preempting  # only the least recently used one, once
    world.loop.tick()
    assert world.asleep == ["a"]
    world.finish_preemptions()
    assert "c" in world.running and c not in world.loop.queue
    assert world.node.allocated.cpu == 2


def test_higher_priority_is_never_preempted_and_a_waiter_gives_up():
    world = Little()
    world.create("vip", 2, priority=5)
    world.now += 600
    low = world.create("low", 1, tenant="u")
    world.loop.tick()
    assert not world.asleep and low in world.loop.queue
    assert low.reason() == "no feasible node among 1 examined (resources: memory x1)"
    assert world.loop.reserved.of("u").sandboxes == 1  # queued, it counts for its tenant's quota
    assert world.loop.give_up(low) and not world.loop.give_up(low)
    assert world.loop.reserved.of("u") == TenantUsage()


def test_quota_counts_creates_in_flight_and_capacity_is_checked_first():
    world = Little()
    world.create("a", 2)
    world.create("b", 2)  # queued: the node is full, but it holds its tenant's quota already
    with pytest.raises(QuotaExceeded, match="max_cpu=4"):
        world.create("c", 1)
    with pytest.raises(InsufficientCapacity, match="no node can ever hold 3 cpu"):
        world.create("d", 3)


@pytest.mark.parametrize(("error", "status"), [(QuotaExceeded("q"), 429), (InsufficientCapacity("c"), 409),
                                               (InUse("u"), 409), (NoCapacity("n", retry_after_s=7), 503)])  # fmt: skip
def test_control_answers_each_refusal_with_its_status(error: Exception, status: int):
    with pytest.raises(ApiError) as caught, scheduler_errors():
        raise error
    assert caught.value.status == status and caught.value.code == error.code  # type: ignore[attr-defined]
    assert caught.value.headers == ({"Retry-After": "7"} if status == 503 else {})
