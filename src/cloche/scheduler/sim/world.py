"""One policy's simulated world: a discrete-event loop over the real scheduler objects
(nodes, placement, admission, preemption, pool sizing), with time and sandboxes simulated."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cloche.scheduler import policies
from cloche.scheduler.admission import FairQueue, Quota, QuotaLedger, dispatch
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import UsageHeadroom
from cloche.scheduler.model import ZERO, Ask, Node, Overcommit, Resources
from cloche.scheduler.pipeline import Scheduler
from cloche.scheduler.pools import PoolSizer
from cloche.scheduler.preemption import Victim, plan, reclaim
from cloche.scheduler.scorers.latency import LatencyMatrix
from cloche.scheduler.sim.nogc import paused_gc
from cloche.scheduler.sim.report import ABLATION, Result
from cloche.scheduler.sim.sandbox import Box, Waiter
from cloche.scheduler.sim.unplaceable import Unplaceable
from cloche.scheduler.sim.workload import MIN_SIZE, TEMPLATES, Agent, SimConfig

MIN_ASK = Ask(MIN_SIZE)
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
        self.scheduler: Scheduler = policies.build(name, self.cluster, matrix=matrix, high_water=cfg.high_water,
                                                   seed=cfg.seed)  # fmt: skip
        self.queue: FairQueue[Waiter] = FairQueue()
        self.ledger = QuotaLedger()
        self.quota = Quota(max_sandboxes=10**9, max_cpu=math.inf, max_memory_mb=math.inf)
        self.boxes: dict[int, Box] = {}
        self._sizes: dict[tuple[float, float], Resources] = {}  # one request object per size
        self.on_node: dict[str, set[int]] = {n.id: set() for n in nodes}
        # idle running sandboxes per node (preemption victims), in the order they went idle
        self.idle: dict[str, dict[int, Box]] = {n.id: {} for n in nodes}
        self.sizers = {n.id: PoolSizer(cfg.pool_budget_mb, floor={}) for n in nodes} if self.cloche else {}
        main_template = TEMPLATES[0][0]
        for n in nodes:
            n.pools = {main_template: cfg.static_pool} if not self.cloche else {}
        self.refilling: dict[tuple[str, str], int] = {}
        self._unplaceable = Unplaceable(self.scheduler)
        # A pass that neither admitted nor planned is repeated only once something it depends
        # on changed (`_changes`: the queue, room for a size that failed, a preemption done) or a waiter may
        # plan a preemption again: (changes, time) of the last such pass.
        self._changes = 0
        self._quiet: tuple[int, float] | None = None
        self._usage_filtered = any(isinstance(f, UsageHeadroom) for f in self.scheduler.filters)
        self.events: list[Event] = []
        self.seq = 0
        self.now = 0.0
        self.result = Result(policy)

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
            if self._usage_filtered and after.memory_mb < before.memory_mb:
                self._changes += self._unplaceable.freed(node)
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
        w = Waiter(box, self._ask(box), self.now, wake)
        # wakes go ahead of creates of the same priority: a user is already waiting on them
        self.queue.push(w, box.agent.tenant, 2 * box.agent.priority + (1 if wake else 0))
        self._changes += 1
        self.at(self.now + self.cfg.wait_s, self.give_up, w)
        self.dispatch()

    def give_up(self, w: Waiter) -> None:
        if not self.queue.remove(w):
            return
        self._changes += 1
        box = w.box
        if w.wake:
            self.result.failed_wakes += 1
            self.result.latencies.append(self.cfg.wait_s * 1000)
            self._next_turn(box)  # the user gave up on this turn; the agent sleeps on
        else:
            self.result.rejected += 1
            self.result.waits.append(self.cfg.wait_s)
            box.state = "gone"

    def dispatch(self) -> None:
        if not len(self.queue):
            return
        if not self.cloche and MIN_ASK in self._unplaceable:
            return  # nothing fits, and without preemption a pass would do nothing else
        quiet = self._quiet
        if quiet is not None and quiet[0] == self._changes and self.now < quiet[1] - 1e-6:
            return  # the last pass did nothing, and until a waiter may preempt again neither would this one
        self._failed: list[Resources] = []
        self._covered: dict[int, bool | None] = {}  # id(size) -> _try's answer, once a size in _failed covers it
        self._planned = False  # at most one preemption plan per pass (each plan scans every sandbox)
        self._busy = False  # the pass admitted or planned
        self._retry_at = math.inf  # when a waiter that reached preemption may try it again
        dispatch(self.queue, self._try)
        self._quiet = None if self._busy else (self._changes, self._retry_at)

    def _try(self, w: Waiter) -> bool | None:
        if w.preempting:
            return False
        res = w.ask.resources
        # Placement depends only on the size here (no constraints in this workload): an
        # ask at least as large as one that just failed fails too; once the smallest
        # size has failed, nothing else can fit until something changes.
        covered = self._covered
        if id(res) in covered:
            return covered[id(res)]
        for failed in self._failed:
            if failed.fits_in(res):
                covered[id(res)] = answer = None if failed.fits_in(MIN_SIZE) else False
                return answer
        box = w.box
        quota_reason = self.ledger.check(box.agent.tenant, self.quota, w.ask.resources, new=not w.wake)
        if quota_reason is not None:
            return False
        node = None
        if w.ask not in self._unplaceable:  # else placing would fail again
            t0 = time.perf_counter()
            node = self.scheduler.place(w.ask).node
            self.result.decisions_us.append((time.perf_counter() - t0) * 1e6)
            if node is None:
                self._unplaceable.failed(res)
        if node is None:
            if self.cloche and not self._planned and self.now - w.tried_preempt >= self.cfg.tick_s:
                w.tried_preempt = self.now
                self._planned = self._busy = True
                if self._preempt_for(w):
                    return False
            self._retry_at = min(self._retry_at, w.tried_preempt + self.cfg.tick_s)
            self._failed.append(res)
            return None if res.fits_in(MIN_SIZE) else False
        self._busy = True
        self.ledger.activate(box.agent.tenant, w.ask.resources, new=not w.wake)
        self.cluster.reserve(node, box.key, w.ask.resources)
        self._start(w, node)
        return True

    def _start(self, w: Waiter, node: Node) -> None:
        box, cfg, res = w.box, self.cfg, self.result
        waited = self.now - w.since
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
        self.dispatch()

    def _release(self, box: Box) -> None:
        node = box.node
        self._set_usage(box, ZERO)
        self.cluster.release(box.key)
        if node is not None:
            self.on_node[node.id].discard(box.agent.id)
            self.idle[node.id].pop(box.agent.id, None)
            self._changes += self._unplaceable.freed(node)
        box.node = None

    # ---- preemption by hibernation ------------------------------------------------------------

    def _victims(self, node_ids: Iterable[str], max_priority: float = math.inf) -> dict[str, list[Victim]]:
        """Idle sandboxes (long enough to be preempted) of at most `max_priority`, per node
        that has any, least recently used first."""
        out = {}
        now, idle_s = self.now, self.cfg.preempt_idle_s
        for nid in node_ids:
            vs = []
            for box in self.idle[nid].values():
                if now - box.last_active < idle_s:  # preemption.eligible's test, exactly
                    break  # the rest went idle later
                if box.agent.priority <= max_priority:
                    vs.append(box.as_victim())
            if vs:
                out[nid] = vs
        return out

    def _preempt_for(self, w: Waiter) -> bool:
        victims = self._victims(self.idle, w.ask.priority)
        p = plan(self.scheduler, w.ask, victims, self.now, self.cfg.preempt_idle_s)
        if p is None:
            return False
        w.preempting = True
        for v in p.victims:
            self._hibernate(self.boxes[int(v.key[2:])])
        self.at(self.now + self.cfg.hibernate_ms / 1000, self._preempted, w)
        return True

    def _preempted(self, w: Waiter) -> None:
        w.preempting = False
        self._changes += 1
        self.dispatch()

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
        self.dispatch()

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
            if self.cloche:
                self._autosize(node)
                self._guard(node)
        res.alloc_frac.append(alloc / cap)
        res.used_frac.append(used / cap)
        res.running.append(sum(len(s) for s in self.on_node.values()))
        self.dispatch()

    def _autosize(self, node: Node) -> None:
        targets = self.sizers[node.id].tick(self.now)
        for template, target in targets.items():
            have = node.pools.get(template, 0)
            if have > target:
                node.pools[template] = target
            else:
                for _ in range(target - have - self.refilling.get((node.id, template), 0)):
                    self._refill(node, template)

    def _guard(self, node: Node) -> None:
        """Live usage feedback: hibernate idle sandboxes of a node above its high-water mark."""
        over = node.usage.memory_mb - node.capacity.memory_mb * self.cfg.high_water
        if over <= 0:
            return
        victims = self._victims([node.id]).get(node.id, [])
        for v in reclaim(node, victims, self.now, self.cfg.preempt_idle_s, over, ZERO):
            self._hibernate(self.boxes[int(v.key[2:])])
