"""Property tests (hypothesis): the scheduler's invariants under arbitrary inputs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cloche.scheduler import policies
from cloche.scheduler.admission import FairQueue, Quota, QuotaLedger, dispatch
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import ResourceFit
from cloche.scheduler.model import Ask, Node, Overcommit, Resources
from cloche.scheduler.pipeline import Scheduler
from cloche.scheduler.preemption import Victim, eligible, plan

ratios = st.sampled_from([1.0, 1.5, 2.0, 4.0])
nodes_st = st.lists(
    st.tuples(st.sampled_from([1, 2, 4, 16]), st.sampled_from([512, 1024, 4096, 65536]), ratios, ratios,
              st.sampled_from(["us", "eu"])),  # fmt: skip
    min_size=1, max_size=12,
)  # fmt: skip
asks_st = st.tuples(st.sampled_from([0.1, 0.25, 0.5, 1, 2, 4]), st.sampled_from([64, 256, 512, 1024, 4096]),
                    st.sampled_from(["us", "eu", None]))  # fmt: skip
ops_st = st.lists(st.one_of(st.tuples(st.just("place"), asks_st), st.tuples(st.just("release"), st.integers(0, 50))),
                  max_size=120)  # fmt: skip


def _cluster(spec: list[tuple[float, float, float, float, str]]) -> Cluster:
    return Cluster(Node(f"n{i}", Resources(c, m, 1e9), {"region": r}, Overcommit(oc, om))
                   for i, (c, m, oc, om, r) in enumerate(spec))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(nodes_st, ops_st, st.sampled_from(policies.POLICIES))
def test_nothing_is_placed_beyond_capacity_with_overcommit(spec, ops, policy):
    cluster = _cluster(spec)
    s = policies.build(policy, cluster, seed=0)
    live: list[str] = []
    for i, (op, arg) in enumerate(ops):
        if op == "place":
            cpu, mem, region = arg
            p = s.schedule(Ask(Resources(cpu, mem), region=region), f"k{i}")
            if p.node is not None:
                live.append(f"k{i}")
            else:  # refused only when truly no node fits
                assert all(s.infeasible(n, Ask(Resources(cpu, mem), region=region)) for n in cluster.nodes)
        elif live:
            cluster.release(live.pop(arg % len(live)))
        for n in cluster.nodes:
            placed = [r for nid, r in cluster.placed.values() if nid == n.id]
            total = Resources(sum(r.cpu for r in placed), sum(r.memory_mb for r in placed))
            assert abs(total.cpu - n.allocated.cpu) < 1e-6 and abs(total.memory_mb - n.allocated.memory_mb) < 1e-6
            assert n.allocated.cpu <= n.capacity.cpu * n.overcommit.cpu + 1e-6
            assert n.allocated.memory_mb <= n.capacity.memory_mb * n.overcommit.memory_mb + 1e-6


tenant_st = st.sampled_from(["a", "b", "c"])
ledger_op = st.tuples(st.sampled_from(["admit", "sleep", "wake", "remove"]), tenant_st, st.sampled_from([0.5, 1, 2]),
                      st.sampled_from([256, 1024, 2048]))  # fmt: skip
ledger_ops = st.lists(ledger_op, max_size=80)
quota_st = st.builds(Quota, st.integers(0, 6), st.sampled_from([0, 1, 2.5, 4]), st.sampled_from([0, 1024, 3000]))


@settings(max_examples=200, deadline=None)
@given(ledger_ops, st.dictionaries(tenant_st, quota_st, min_size=3, max_size=3))
def test_quotas_are_never_exceeded(ops, quotas):
    ledger = QuotaLedger()
    active: dict[str, list[Resources]] = {t: [] for t in quotas}
    asleep: dict[str, list[Resources]] = {t: [] for t in quotas}
    for op, tenant, cpu, mem in ops:
        res, q = Resources(cpu, mem), quotas[tenant]
        if op == "admit" and ledger.admit(tenant, q, res) is None:
            active[tenant].append(res)
        elif op == "sleep" and active[tenant]:
            r = active[tenant].pop(0)
            ledger.deactivate(tenant, r)
            asleep[tenant].append(r)
        elif op == "wake" and asleep[tenant] and ledger.check(tenant, q, asleep[tenant][0], new=False) is None:
            r = asleep[tenant].pop(0)
            ledger.activate(tenant, r)
            active[tenant].append(r)
        elif op == "remove" and active[tenant]:
            ledger.remove(tenant, active[tenant].pop(), active=True)
        for t, quota in quotas.items():
            u = ledger.of(t)
            assert u.sandboxes == len(active[t]) + len(asleep[t]) <= quota.max_sandboxes
            assert u.cpu <= quota.max_cpu + 1e-9 and u.memory_mb <= quota.max_memory_mb + 1e-9
            assert abs(u.cpu - sum(r.cpu for r in active[t])) < 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("push"), tenant_st), st.just(("pop", ""))), max_size=150))
def test_the_queue_is_fair_between_tenants_of_equal_priority(ops):
    """While two tenants both have items waiting, their served counts differ by at most one."""
    q: FairQueue[int] = FairQueue()
    waiting = {t: 0 for t in "abc"}
    served_since: dict[frozenset[str], dict[str, int]] = {}
    for i, (op, tenant) in enumerate(ops):
        if op == "push":
            q.push(i, tenant)
            waiting[tenant] += 1
        elif len(q):
            item = q.pop()
            owner = ops[item][1]
            waiting[owner] -= 1
            for key in list(served_since):
                if owner in key:
                    served_since[key][owner] += 1
        backlogged = [t for t, n in waiting.items() if n > 0]
        for x in backlogged:
            for y in backlogged:
                if x < y:
                    counts = served_since.setdefault(frozenset((x, y)), {x: 0, y: 0})
                    assert abs(counts[x] - counts[y]) <= 1, (x, y, counts)
        for key in list(served_since):  # a pair's window ends when one of them runs dry
            if any(waiting[t] == 0 for t in key):
                del served_since[key]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(tenant_st, st.integers(0, 2), st.integers(1, 3)), max_size=60), st.integers(0, 9))
def test_dispatch_never_admits_a_lower_priority_past_a_blocked_higher_one(items, room):
    q: FairQueue[int] = FairQueue()
    for i, (tenant, prio, _) in enumerate(items):
        q.push(i, tenant, prio)
    left = [room]
    failed: list[int] = []

    def fits(i: int) -> bool:
        if items[i][2] <= left[0]:
            left[0] -= items[i][2]
            return True
        failed.append(items[i][1])
        return False

    admitted = dispatch(q, fits)
    if failed:
        assert all(items[i][1] >= failed[0] for i in admitted)
    assert len(admitted) + len(q) == len(items)


victims_st = st.lists(st.tuples(st.integers(-2, 3), st.floats(0, 2000), st.sampled_from([0.5, 1, 2]),
                                st.sampled_from([256, 1024, 2048])), max_size=20)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(victims_st, st.integers(-2, 3), asks_st, st.floats(0, 1000))
def test_preemption_never_touches_higher_priority_or_busy_sandboxes(victims, priority, a, idle_s):
    now = 5000.0
    node = Node("n", Resources(4, 4096, 1e9), {"region": "us"}, Overcommit(1, 1))
    vs = [Victim(f"v{i}", "n", Resources(c, m), p, now - age, m / 4) for i, (p, age, c, m) in enumerate(victims)]
    node.allocated = Resources(sum(v.resources.cpu for v in vs), sum(v.resources.memory_mb for v in vs))
    s = policies.build("cloche", Cluster([node]))
    ask = Ask(Resources(a[0], a[1]), priority=priority, region=a[2])
    p = plan(s, ask, {"n": vs}, now, idle_s)
    if p is None:
        return
    for v in p.victims:
        assert v.priority <= priority
        assert now - v.last_active >= idle_s
    freed = Resources(sum(v.resources.cpu for v in p.victims), sum(v.resources.memory_mb for v in p.victims))
    after = Node("n", node.capacity, node.labels, node.overcommit, allocated=node.allocated - freed)
    assert ResourceFit().check(after, ask) is None


def _fewest_victims(s: Scheduler, ask: Ask, victims_by_node: dict[str, list[Victim]], now: float,
                    idle_s: float) -> tuple[str, list[str]] | None:  # fmt: skip
    """plan's answer by brute force: on every node every number of victims, least
    recently used first, on a what-if copy made by dataclasses.replace."""
    best: tuple[tuple[int, float, int], str, list[str]] | None = None
    for index, (node_id, vs) in enumerate(victims_by_node.items()):
        node = s.cluster.by_id[node_id]
        order = eligible(vs, ask.priority, now, idle_s)
        for k in range(1, len(order) + 1):
            freed = sum((v.resources for v in order[:k]), Resources())
            used = max(0.0, node.usage.memory_mb - sum(v.usage_mb for v in order[:k]))
            what_if = replace(node, allocated=node.allocated - freed, usage=Resources(node.usage.cpu, used))
            if s.infeasible(what_if, ask) is None:
                rank = (k, order[k - 1].last_active, index)
                if best is None or rank < best[0]:
                    best = (rank, node_id, [v.key for v in order[:k]])
                break
    return None if best is None else best[1:]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(victims_st, st.floats(0, 3000)), min_size=1, max_size=6), st.integers(-2, 3), asks_st,
       st.sampled_from([0.0, 100.0, 600.0]))  # fmt: skip
def test_preemption_plan_is_the_fewest_then_longest_idle_victims(spec, priority, a, idle_s):
    now = 5000.0
    nodes, victims_by_node = [], {}
    for i, (victims, used) in enumerate(spec):
        node = Node(f"n{i}", Resources(4, 4096, 1e9), {"region": "us"}, Overcommit(1, 1), usage=Resources(0, used))
        vs = [Victim(f"v{i}.{j}", node.id, Resources(c, m), p, now - round(age, -2), m / 4)
              for j, (p, age, c, m) in enumerate(victims)]  # ages in steps of 100 s: ties  # fmt: skip
        node.allocated = Resources(sum(v.resources.cpu for v in vs), sum(v.resources.memory_mb for v in vs))
        nodes.append(node)
        victims_by_node[node.id] = vs
    s = policies.build("cloche", Cluster(nodes))
    ask = Ask(Resources(a[0], a[1]), priority=priority, region=a[2])
    p = plan(s, ask, victims_by_node, now, idle_s)
    got = None if p is None else (p.node.id, [v.key for v in p.victims])
    assert got == _fewest_victims(s, ask, victims_by_node, now, idle_s)
