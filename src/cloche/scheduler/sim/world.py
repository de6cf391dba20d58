"""One policy's simulated world: a discrete-event loop that drives the server's own
admission loop (`cloche.scheduler.loop`: the fair queue, quotas, placement, preemption,
the guard and pool sizing) with simulated sandboxes as its effects and a virtual clock."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from cloche.scheduler import policies
from cloche.scheduler.admission import Quota, QuotaLedger, TenantUsage
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.loop import AdmissionLoop, LoopConfig
from cloche.scheduler.model import ZERO, Ask, Node, Overcommit, Resources
from cloche.scheduler.pipeline import Placement
from cloche.scheduler.pools import PoolSizer
from cloche.scheduler.preemption import Victim
from cloche.scheduler.scorers.latency import LatencyMatrix
from cloche.scheduler.sim.nogc import paused_gc
from cloche.scheduler.sim.report import ABLATION, Result
from cloche.scheduler.sim.sandbox import Box, SimWaiter
from cloche.scheduler.sim.workload import MIN_SIZE, TEMPLATES, Agent, SimConfig

Event = tuple[float, int, Callable[..., None], tuple[Any, ...]]  # (time, sequence, what, its arguments)


class World:
    def __init__(self, policy: str, cfg: SimConfig, agents: list[Agent], matrix: LatencyMatrix) -> None:
        self.cfg = cfg
        self.policy = policy
        self.agents = agents
        self.matrix = matrix
        self.cloche = policy in ("cloche", ABLATION)
        overcommit = policy == "cloche"
        ratio = Overcommit(cfg.cpu_overcommit, cfg.memory_overcommit) if overcommit else Overcommit()
        nodes = [
            Node(
                f"{cfg.regions[i % len(cfg.regions)]}-{i // len(cfg.regions)}",
                Resources(cfg.node_cpu, cfg.node_memory_mb, math.inf),
                {"region": cfg.regions[i % len(cfg.regions)]},
                ratio,
            )  # fmt: skip
            for i in range(cfg.nodes)
        ]
        self.cluster = Cluster(nodes)
        name = "cloche" if self.cloche else policy
        scheduler = policies.build(name, self.cluster, matrix=matrix, high_water=cfg.high_water, seed=cfg.seed)
        self.ledger = QuotaLedger()  # what each tenant's sandboxes hold (the loop adds what is in flight)
        self.quota = Quota(max_sandboxes=10**9, max_cpu=math.inf, max_memory_mb=math.inf)
        self.boxes: dict[int, Box] = {}
        self._sizes: dict[tuple[float, float], Resources] = {}  # one request object per size
        self.on_node: dict[str, set[int]] = {n.id: set() for n in nodes}
        # idle running sandboxes per node (preemption victims), in the order they went idle
        self.idle: dict[str, dict[int, Box]] = {n.id: {} for n in nodes}
        sizers = {n.id: PoolSizer(cfg.pool_budget_mb, floor={}) for n in nodes} if self.cloche else {}
        main_template = TEMPLATES[0][0]
        for n in nodes:
            n.pools = {main_template: cfg.static_pool} if not self.cloche else {}
        self.refilling: dict[tuple[str, str], int] = {}
        self.events: list[Event] = []
        self.seq = 0
        self.now = 0.0
        self.result = Result(policy)
        loop_cfg = LoopConfig(preempt=self.cloche, idle_s=cfg.preempt_idle_s, high_water=cfg.high_water,
                              retry_s=cfg.tick_s, min_size=MIN_SIZE)  # fmt: skip
        self.loop: AdmissionLoop[SimWaiter] = AdmissionLoop(scheduler, self, self.clock, loop_cfg, sizers)
        self.loop.decisions_us = self.result.decisions_us
        self.sizers = sizers

    def clock(self) -> float:
        return self.now

    # ---- event plumbing ----------------------------------------------------------------

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, fn, args))

    def run(self) -> Result:
        started = time.perf_counter()
        horizon = self.cfg.hours * 3600
        ticks = []
        t = 0.0
        while t <= horizon:
            ticks.append(t)
            t += self.cfg.tick_s
        # Arrivals and ticks are fed in one at a time (a small heap is a fast heap), with the
        # sequence numbers they would have had if all were queued up front: the same order.
        n = len(self.agents)
        arrivals = sorted(range(n), key=lambda i: self.agents[i].t)
        self._feed((self.agents[i].t, i + 1, self.arrive, (self.agents[i],)) for i in arrivals)
        self._feed((tk, n + 1 + k, self.tick, ()) for k, tk in enumerate(ticks))
        self.seq = n + len(ticks)
        with paused_gc():
            while self.events:
                t, _, fn, args = heapq.heappop(self.events)
                if t > horizon + self.cfg.wait_s:
                    break
                self.now = t
                fn(*args)
        self.result.wall_s = time.perf_counter() - started
        return self.result

    def _feed(self, stream: Iterator[Event]) -> None:
        """Queue the next event of a stream in time order; it queues its successor as it runs."""
        event = next(stream, None)
        if event is not None:
            t, seq, fn, args = event
            heapq.heappush(self.events, (t, seq, self._fed, (stream, fn, args)))

    def _fed(self, stream: Iterator[Event], fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._feed(stream)
        fn(*args)

    # ---- node accounting -----------------------------------------------------------------

    def _set_usage(self, box: Box, usage: Resources) -> None:
        node = box.node
        if node is not None:
            # before - box.usage + usage, in one step (sandboxes use no disk or gpus here)
            before, old = node.usage, box.usage
            node.usage = after = Resources(before.cpu - old.cpu + usage.cpu,
                                           before.memory_mb - old.memory_mb + usage.memory_mb)  # fmt: skip
            if after.memory_mb < before.memory_mb:
                self.loop.usage_fell(node)
        box.usage = usage

    # ---- admission -------------------------------------------------------------------------

    def _ask(self, box: Box) -> Ask:
        a = box.agent
        locality = (box.key,) if box.home is not None else ()
        return Ask(box.request, a.template, a.tenant, a.priority, a.region, locality=locality)

    def arrive(self, agent: Agent) -> None:
        self.result.offered += 1
        size = (agent.cpu, agent.memory_mb)
        request = self._sizes.get(size) or self._sizes.setdefault(size, Resources(*size))
        box = Box(agent, request, last_active=self.now)
        self.boxes[agent.id] = box
        self._enqueue(box, wake=False)

    def _enqueue(self, box: Box, wake: bool) -> None:
        w = SimWaiter(self._ask(box), box.key, self.now, wake, box=box)
        self.at(self.now + self.cfg.wait_s, self.give_up, w)
        self.loop.submit(w, self.quota)

    def give_up(self, w: SimWaiter) -> None:
        if not self.loop.give_up(w):
            return
        box = w.box
        if w.wake:
            self.result.failed_wakes += 1
            self.result.latencies.append(self.cfg.wait_s * 1000)
            self._next_turn(box)  # the user gave up on this turn; the agent sleeps on
        else:
            self.result.rejected += 1
            self.result.waits.append(self.cfg.wait_s)
            box.state = "gone"

    # ---- the loop's effects ------------------------------------------------------------------

    def quota_usage(self, tenant: str) -> TenantUsage:
        return self.ledger.of(tenant)

    def placed(self, w: SimWaiter, placement: Placement) -> None:
        box, cfg, res, node = w.box, self.cfg, self.result, placement.node
        assert node is not None, "the loop starts placed waiters only"
        self.loop.finish(w)
        self.ledger.activate(box.agent.tenant, box.request, new=not w.wake)
        waited = placement.waited_s
        box.node = node
        box.state = "running"
        self.on_node[node.id].add(box.agent.id)
        box.rtt = rtt = self.matrix.rtt(box.agent.region, node.region)
        if w.wake:
            res.wakes += 1
            start_ms = cfg.wake_local_ms if box.home is node else cfg.wake_remote_ms
            if box.home is not None and box.home is not node:
                self.cluster.drop(box.home, box.key)
        else:
            res.admitted += 1
            res.waits.append(waited)
            template = box.agent.template
            if node.pools.get(template, 0) > 0:
                node.pools[template] -= 1
                res.warm_starts += 1
                start_ms = cfg.warm_ms
                self._refill(node, template)
            else:
                start_ms = cfg.cold_ms
            if self.cloche:
                self.sizers[node.id].claimed(template)
        box.home = node
        self.cluster.hold(node, box.key)
        self._served(waited * 1000 + start_ms + rtt, rtt)
        box.active = True
        box.last_active = self.now
        self._set_usage(box, box.active_usage)
        active_s = box.agent.turns[box.turn][0]
        self.at(self.now + start_ms / 1000 + active_s, self.turn_end, box)

    def _served(self, latency_ms: float, rtt: float) -> None:
        """A turn served with that user latency, from a node that round trip away."""
        res = self.result
        res.latencies.append(latency_ms)
        res.turns += 1
        res.local_turns += rtt <= 10

    # ---- agent behaviour ---------------------------------------------------------------------

    def turn_end(self, box: Box) -> None:
        box.active = False
        box.last_active = self.now
        self._set_usage(box, box.idle_usage)
        if box.node is not None and self.cloche:  # only cloche preempts
            box.victim = None  # made once a preemption looks at it (most idle gaps end long before)
            self.idle[box.node.id][box.agent.id] = box
        self._next_turn(box)

    def _next_turn(self, box: Box) -> None:
        turns = box.agent.turns
        gap = turns[box.turn][1]
        box.turn += 1
        if box.turn >= len(turns):
            self.at(self.now + self.cfg.keepalive_s, self.expire, box, box.turn)
        else:
            self.at(self.now + gap, self.turn_start, box)

    def turn_start(self, box: Box) -> None:
        if box.state == "gone":
            return
        if box.state in ("hibernated", "hibernating"):
            if box.state == "hibernating":
                self.at(self.now + self.cfg.hibernate_ms / 1000, self.turn_start, box)
                return
            self._enqueue(box, wake=True)
            return
        box.active = True
        box.last_active = self.now
        self._set_usage(box, box.active_usage)
        if box.node is not None:
            self.idle[box.node.id].pop(box.agent.id, None)
        self._served(box.rtt, box.rtt)  # a running sandbox's node: the round trip only
        self.at(self.now + box.agent.turns[box.turn][0], self.turn_end, box)

    def expire(self, box: Box, turn: int) -> None:
        if box.state == "gone" or box.turn != turn:
            return
        if box.state == "hibernating":
            self.at(self.now + self.cfg.hibernate_ms / 1000, self.expire, box, turn)
            return
        key = box.key
        active = box.state == "running"
        if active:
            self._release(box)
        if box.home is not None:
            self.cluster.drop(box.home, key)
        self.ledger.remove(box.agent.tenant, box.request, active)
        box.state = "gone"
        self.loop.dispatch()

    def _release(self, box: Box) -> None:
        node = box.node
        self._set_usage(box, ZERO)
        self.cluster.release(box.key)
        if node is not None:
            self.on_node[node.id].discard(box.agent.id)
            self.idle[node.id].pop(box.agent.id, None)
            self.loop.freed(node)
        box.node = None

    # ---- preemption by hibernation ------------------------------------------------------------

    def victims(self, max_priority: float, node_ids: Iterable[str] | None = None) -> Mapping[str, list[Victim]]:
        """Idle sandboxes (long enough to be preempted) of at most `max_priority`, per node
        that has any, least recently used first."""
        out = {}
        now, idle_s = self.now, self.cfg.preempt_idle_s
        for nid in self.idle if node_ids is None else node_ids:
            vs = []
            for box in self.idle[nid].values():
                if now - box.last_active < idle_s:  # preemption.eligible's test, exactly
                    break  # the rest went idle later
                if box.agent.priority <= max_priority:
                    vs.append(box.as_victim())
            if vs:
                out[nid] = vs
        return out

    def hibernate(self, victims: list[Victim], waiter: SimWaiter | None) -> None:
        for v in victims:
            self._hibernate(self.boxes[int(v.key[2:])])
        if waiter is not None:
            keys = [v.key for v in victims]
            self.at(self.now + self.cfg.hibernate_ms / 1000, self.loop.preempted, waiter, keys)

    def _hibernate(self, box: Box) -> None:
        box.state = "hibernating"
        if box.node is not None:
            self.idle[box.node.id].pop(box.agent.id, None)
        self.result.hibernations += 1
        self.ledger.deactivate(box.agent.tenant, box.request)
        self.at(self.now + self.cfg.hibernate_ms / 1000, self._hibernated, box)

    def _hibernated(self, box: Box) -> None:
        self._release(box)
        box.state = "hibernated"
        self.loop.dispatch()

    # ---- periodic work -----------------------------------------------------------------------

    def _refill(self, node: Node, template: str) -> None:
        key = (node.id, template)
        target = self.sizers[node.id].targets.get(template, 0) if self.cloche else self.cfg.static_pool
        inflight = self.refilling.get(key, 0)
        if node.pools.get(template, 0) + inflight < target:
            self.refilling[key] = inflight + 1
            self.at(self.now + self.cfg.cold_ms / 1000, self._refilled, node, template)

    def _refilled(self, node: Node, template: str) -> None:
        key = (node.id, template)
        self.refilling[key] -= 1
        node.pools[template] = node.pools.get(template, 0) + 1
        if self.cloche:
            self.sizers[node.id].refilled(template, self.cfg.cold_ms / 1000)

    def tick(self) -> None:
        res = self.result
        alloc = used = cap = 0.0
        for node in self.cluster.nodes:
            res.node_ticks += 1
            res.overflow_ticks += node.usage.memory_mb > node.capacity.memory_mb
            res.contention_ticks += node.usage.cpu > node.capacity.cpu
            alloc += node.allocated.memory_mb
            used += node.usage.memory_mb
            cap += node.capacity.memory_mb
        res.alloc_frac.append(alloc / cap)
        res.used_frac.append(used / cap)
        res.running.append(sum(len(s) for s in self.on_node.values()))
        self.loop.tick()

    def pool_targets(self, node: Node, targets: dict[str, int]) -> None:
        for template, target in targets.items():
            have = node.pools.get(template, 0)
            if have > target:
                node.pools[template] = target
            else:
                for _ in range(target - have - self.refilling.get((node.id, template), 0)):
                    self._refill(node, template)
