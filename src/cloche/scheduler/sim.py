"""`cloche sim`: the real scheduler code against simulated nodes and a workload.

The simulator is a discrete-event loop. Nodes, placement (filters, scorers, sampling),
admission (quotas, priorities, the fair queue), preemption by hibernation and warm-pool
autosizing are the same objects the server uses; only time and the sandboxes are
simulated. Several policies run over the same workload (same seed) side by side:

- `random`, `first-fit`, `kubernetes` (LeastAllocated + BalancedAllocation): requests
  against capacity (no overcommit), idle sandboxes hold their room until their
  keep-alive timeout, a static warm pool of the main template on every node;
- `cloche`: overcommit with live-usage feedback, region-aware scoring, preemption by
  hibernating least-recently-used idle sandboxes (a later request wakes them, paying
  the wake latency), warm pools sized by claim rate.

Workload: per region, Poisson arrivals whose rate follows a diurnal cycle (regions
offset in phase like time zones); each agent has a request size from a small
heavy-tailed mix, a number of turns (active bursts, lognormal) separated by idle gaps
(Pareto, heavy-tailed), then a keep-alive idle period before it is killed. A trace file
(JSON lines, one agent per line, the fields of `Agent`) replaces the synthetic workload.

Every create waits up to `wait_s` in the admission queue and is rejected after that.
Latencies that are not measured here (cold and warm start, wake, hibernate) are
parameters; their defaults are stated in the report.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
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

DAY_S = 86400.0
SIZES = ((0.6, 0.25, 512), (0.3, 0.5, 1024), (0.1, 1.0, 4096))  # (share, cpu, memory_mb)
TEMPLATES = (("python", 0.7), ("node", 0.25), ("browser", 0.05))
MIN_SIZE = Resources(min(c for _, c, _ in SIZES), min(m for _, _, m in SIZES))
ABLATION = "cloche-no-overcommit"  # cloche without overcommit: what hibernation, pools and placement add alone
SIM_POLICIES = (*policies.POLICIES, ABLATION)
MARK_BEGIN = "<!-- cloche sim: begin -->"
MARK_END = "<!-- cloche sim: end -->"
Event = tuple[float, int, Callable[..., None], tuple[Any, ...]]  # (time, sequence, what, its arguments)


@dataclass
class SimConfig:
    nodes: int = 24
    regions: tuple[str, ...] = ("us", "eu", "ap")
    node_cpu: float = 16.0
    node_memory_mb: float = 64 * 1024
    hours: float = 12.0
    load: float = 1.6  # offered concurrency / the cluster's capacity without overcommit
    tenants: int = 12
    premium_share: float = 0.1  # share of agents from the one priority-1 tenant
    wait_s: float = 30.0
    keepalive_s: float = 600.0
    mean_turns: float = 6.0
    diurnal: float = 0.5  # amplitude of the daily cycle
    seed: int = 1
    # latencies not measured by the simulator (ms)
    cold_ms: float = 150.0
    warm_ms: float = 5.0
    wake_local_ms: float = 300.0
    wake_remote_ms: float = 900.0
    hibernate_ms: float = 400.0
    # cloche's knobs
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 2.0
    high_water: float = 0.85
    preempt_idle_s: float = 120.0
    pool_budget_mb: float = 1024.0
    static_pool: int = 2
    tick_s: float = 10.0


@dataclass
class Agent:
    id: int
    t: float
    region: str
    tenant: str
    priority: int
    template: str
    cpu: float
    memory_mb: float
    turns: list[tuple[float, float]]  # (active seconds, idle gap after it); the last gap is ignored
    active_frac: float = 0.6  # share of its request it uses while active
    idle_frac: float = 0.15  # share of its memory request it keeps while idle


# ---- workload -------------------------------------------------------------------------


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    x, acc = rng.random(), 0.0
    for item in weighted:
        acc += item[0] if isinstance(item[0], float) else item[1]
        if x < acc:
            return item
    return weighted[-1]


def _turns(rng: random.Random, mean_turns: float) -> list[tuple[float, float]]:
    n = 1 + int(rng.expovariate(1 / max(mean_turns - 1, 0.01)))
    out = []
    for _ in range(n):
        active = min(600.0, rng.lognormvariate(math.log(20), 1.0))
        gap = min(1800.0, 15.0 * rng.paretovariate(1.5))
        out.append((active, gap))
    return out


def mean_session_s(cfg: SimConfig) -> float:
    """Expected lifetime of an agent's sandbox (turns, gaps, keep-alive), by sampling."""
    rng = random.Random(12345)
    total = 0.0
    for _ in range(4000):
        turns = _turns(rng, cfg.mean_turns)
        total += sum(a for a, _ in turns) + sum(g for _, g in turns[:-1]) + cfg.keepalive_s
    return total / 4000


def plain_capacity_agents(cfg: SimConfig) -> float:
    """How many average agents the cluster holds by request, without overcommit."""
    cpu = sum(s * c for s, c, _ in SIZES)
    mem = sum(s * m for s, _, m in SIZES)
    return cfg.nodes * min(cfg.node_cpu / cpu, cfg.node_memory_mb / mem)


def generate(cfg: SimConfig) -> list[Agent]:
    rng = random.Random(cfg.seed)
    horizon = cfg.hours * 3600
    rate = cfg.load * plain_capacity_agents(cfg) / mean_session_s(cfg) / len(cfg.regions)
    peak = rate * (1 + cfg.diurnal)
    agents: list[Agent] = []
    for r, region in enumerate(cfg.regions):
        phase = 2 * math.pi * r / len(cfg.regions)
        t = 0.0
        while True:
            t += rng.expovariate(peak)
            if t >= horizon:
                break
            if rng.random() * peak > rate * (1 + cfg.diurnal * math.sin(2 * math.pi * t / DAY_S + phase)):
                continue  # thinning: a non-homogeneous Poisson process
            premium = rng.random() < cfg.premium_share
            tenant = "premium" if premium else f"t{rng.randrange(cfg.tenants)}"
            _, cpu, mem = _pick(rng, SIZES)
            template = _pick(rng, TEMPLATES)[0]
            turns = _turns(rng, cfg.mean_turns)
            agents.append(Agent(0, t, region, tenant, 1 if premium else 0, template, cpu, mem, turns,
                                rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.2)))  # fmt: skip
    agents.sort(key=lambda a: a.t)
    for i, a in enumerate(agents):
        a.id = i
    return agents


def save_trace(agents: Iterable[Agent], path: Path) -> None:
    with open(path, "w") as f:
        for a in agents:
            f.write(json.dumps(asdict(a)) + "\n")


def load_trace(path: Path) -> list[Agent]:
    names = {f.name for f in fields(Agent)}
    agents = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        data = {k: v for k, v in json.loads(line).items() if k in names}
        data.setdefault("id", i)
        data["turns"] = [tuple(x) for x in data["turns"]]
        agents.append(Agent(**data))
    agents.sort(key=lambda a: a.t)
    return agents


# ---- the simulated world --------------------------------------------------------------


@dataclass
class Box:
    """One agent's sandbox."""

    agent: Agent
    state: str = "queued"  # queued, running, hibernating, hibernated, gone
    node: Node | None = None
    home: Node | None = None  # the node whose disk holds its layer
    active: bool = False
    last_active: float = 0.0
    turn: int = 0
    usage: Resources = ZERO


@dataclass
class Waiter:
    box: Box
    ask: Ask
    since: float
    wake: bool
    tried_preempt: float = -1e18
    preempting: bool = False


@dataclass
class Result:
    policy: str
    offered: int = 0
    admitted: int = 0
    rejected: int = 0
    waits: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    decisions_us: list[float] = field(default_factory=list)
    hibernations: int = 0
    wakes: int = 0
    failed_wakes: int = 0
    warm_starts: int = 0
    cold_starts: int = 0
    local_turns: int = 0
    turns: int = 0
    alloc_frac: list[float] = field(default_factory=list)
    used_frac: list[float] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    overflow_ticks: int = 0
    contention_ticks: int = 0
    node_ticks: int = 0
    wall_s: float = 0.0

    def pct(self, xs: list[float], p: float) -> float:
        if not xs:
            return 0.0
        s = sorted(xs)
        k = (len(s) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    def summary(self) -> dict[str, float]:
        mean = statistics.fmean
        return {
            "admitted": self.admitted,
            "offered": self.offered,
            "rejected": self.rejected,
            "admit_rate": self.admitted / self.offered if self.offered else 0.0,
            "wait_p50_s": self.pct(self.waits, 50),
            "wait_p99_s": self.pct(self.waits, 99),
            "latency_p50_ms": self.pct(self.latencies, 50),
            "latency_p99_ms": self.pct(self.latencies, 99),
            "alloc_util": mean(self.alloc_frac) if self.alloc_frac else 0.0,
            "used_util": mean(self.used_frac) if self.used_frac else 0.0,
            "running_mean": mean(self.running) if self.running else 0.0,
            "hibernations": self.hibernations,
            "wakes": self.wakes,
            "failed_wakes": self.failed_wakes,
            "warm_share": self.warm_starts / max(1, self.warm_starts + self.cold_starts),
            "local_share": self.local_turns / max(1, self.turns),
            "overflow_pct": 100 * self.overflow_ticks / max(1, self.node_ticks),
            "contention_pct": 100 * self.contention_ticks / max(1, self.node_ticks),
            "decision_p50_us": self.pct(self.decisions_us, 50),
            "decision_p99_us": self.pct(self.decisions_us, 99),
            "wall_s": self.wall_s,
        }


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
        self.on_node: dict[str, set[int]] = {n.id: set() for n in nodes}
        # idle running sandboxes per node as preemption victims, in the order they went idle
        self.idle: dict[str, dict[int, Victim]] = {n.id: {} for n in nodes}
        self.sizers = {n.id: PoolSizer(cfg.pool_budget_mb, floor={}) for n in nodes} if self.cloche else {}
        main_template = TEMPLATES[0][0]
        for n in nodes:
            n.pools = {main_template: cfg.static_pool} if not self.cloche else {}
        self.refilling: dict[tuple[str, str], int] = {}
        # Sizes no node takes. Feasibility depends only on the size here (no constraints in
        # this workload) and on each node's allocation and usage, and gets no easier as they
        # grow, so a size stays unplaceable (and so does every larger ask) until a node
        # frees room and its filters accept that size.
        self._unplaceable: list[Resources] = []
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
            before = node.usage
            node.usage = before - box.usage + usage
            if self._usage_filtered and node.usage.memory_mb < before.memory_mb:
                self._freed(node)
        box.usage = usage

    def _freed(self, node: Node) -> None:
        if self._unplaceable:
            infeasible = self.scheduler.infeasible
            self._unplaceable = [u for u in self._unplaceable if infeasible(node, Ask(u)) is not None]

    def _usage_of(self, box: Box) -> Resources:
        a = box.agent
        if box.active:
            return Resources(a.cpu * a.active_frac, a.memory_mb * a.active_frac)
        return Resources(a.cpu * 0.02, a.memory_mb * a.idle_frac)

    # ---- admission -------------------------------------------------------------------------

    def _ask(self, box: Box) -> Ask:
        a = box.agent
        locality = (f"sb{a.id}",) if box.home is not None else ()
        return Ask(Resources(a.cpu, a.memory_mb), a.template, a.tenant, a.priority, a.region, locality=locality)

    def arrive(self, agent: Agent) -> None:
        self.result.offered += 1
        box = Box(agent, last_active=self.now)
        self.boxes[agent.id] = box
        self._enqueue(box, wake=False)

    def _enqueue(self, box: Box, wake: bool) -> None:
        w = Waiter(box, self._ask(box), self.now, wake)
        # wakes go ahead of creates of the same priority: a user is already waiting on them
        self.queue.push(w, box.agent.tenant, 2 * box.agent.priority + (1 if wake else 0))
        self.at(self.now + self.cfg.wait_s, self.give_up, w)
        self.dispatch()

    def give_up(self, w: Waiter) -> None:
        if not self.queue.remove(w):
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

    def dispatch(self) -> None:
        if not self.cloche and any(u.fits_in(MIN_SIZE) for u in self._unplaceable):
            return  # nothing fits, and without preemption a pass would do nothing else
        if len(self.queue):
            self._failed: list[Resources] = []
            self._planned = False  # at most one preemption plan per pass (each plan scans every sandbox)
            dispatch(self.queue, self._try)

    def _try(self, w: Waiter) -> bool | None:
        if w.preempting:
            return False
        res = w.ask.resources
        # Placement depends only on the size here (no constraints in this workload): an
        # ask at least as large as one that just failed fails too; once the smallest
        # size has failed, nothing else can fit until something changes.
        for failed in self._failed:
            if failed.fits_in(res):
                return None if failed.fits_in(MIN_SIZE) else False
        box = w.box
        quota_reason = self.ledger.check(box.agent.tenant, self.quota, w.ask.resources, new=not w.wake)
        if quota_reason is not None:
            return False
        node = None
        if not any(u.fits_in(res) for u in self._unplaceable):  # else placing would fail again
            t0 = time.perf_counter()
            node = self.scheduler.place(w.ask).node
            self.result.decisions_us.append((time.perf_counter() - t0) * 1e6)
            if node is None:
                self._unplaceable.append(res)
        if node is None:
            if self.cloche and not self._planned and self.now - w.tried_preempt >= self.cfg.tick_s:
                w.tried_preempt = self.now
                self._planned = True
                if self._preempt_for(w):
                    return False
            self._failed.append(res)
            return None if res.fits_in(MIN_SIZE) else False
        self.ledger.activate(box.agent.tenant, w.ask.resources, new=not w.wake)
        self.cluster.reserve(node, f"sb{box.agent.id}", w.ask.resources)
        self._start(w, node)
        return True

    def _start(self, w: Waiter, node: Node) -> None:
        box, cfg, res = w.box, self.cfg, self.result
        waited = self.now - w.since
        box.node = node
        box.state = "running"
        self.on_node[node.id].add(box.agent.id)
        rtt = self.matrix.rtt(box.agent.region, node.region)
        if w.wake:
            res.wakes += 1
            start_ms = cfg.wake_local_ms if box.home is node else cfg.wake_remote_ms
            if box.home is not None and box.home is not node:
                self.cluster.drop(box.home, f"sb{box.agent.id}")
        else:
            res.admitted += 1
            res.waits.append(waited)
            self.ledger.of(box.agent.tenant)
            template = box.agent.template
            if node.pools.get(template, 0) > 0:
                node.pools[template] -= 1
                res.warm_starts += 1
                start_ms = cfg.warm_ms
                self._refill(node, template)
            else:
                res.cold_starts += 1
                start_ms = cfg.cold_ms
            if self.cloche:
                self.sizers[node.id].claimed(template)
        box.home = node
        self.cluster.hold(node, f"sb{box.agent.id}")
        res.latencies.append(waited * 1000 + start_ms + rtt)
        res.turns += 1
        res.local_turns += rtt <= 10
        box.active = True
        box.last_active = self.now
        self._set_usage(box, self._usage_of(box))
        active_s = box.agent.turns[box.turn][0]
        self.at(self.now + start_ms / 1000 + active_s, self.turn_end, box)

    # ---- agent behaviour ---------------------------------------------------------------------

    def turn_end(self, box: Box) -> None:
        box.active = False
        box.last_active = self.now
        self._set_usage(box, self._usage_of(box))
        if box.node is not None:
            a = box.agent
            self.idle[box.node.id][a.id] = Victim(f"sb{a.id}", box.node.id, Resources(a.cpu, a.memory_mb),
                                                  a.priority, self.now, box.usage.memory_mb)  # fmt: skip
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
        self._set_usage(box, self._usage_of(box))
        if box.node is not None:
            self.idle[box.node.id].pop(box.agent.id, None)
        rtt = self.matrix.rtt(box.agent.region, box.node.region if box.node else None)
        self.result.latencies.append(rtt)
        self.result.turns += 1
        self.result.local_turns += rtt <= 10
        self.at(self.now + box.agent.turns[box.turn][0], self.turn_end, box)

    def expire(self, box: Box, turn: int) -> None:
        if box.state == "gone" or box.turn != turn:
            return
        if box.state == "hibernating":
            self.at(self.now + self.cfg.hibernate_ms / 1000, self.expire, box, turn)
            return
        key = f"sb{box.agent.id}"
        active = box.state == "running"
        if active:
            self._release(box)
        if box.home is not None:
            self.cluster.drop(box.home, key)
        self.ledger.remove(box.agent.tenant, Resources(box.agent.cpu, box.agent.memory_mb), active)
        box.state = "gone"
        self.dispatch()

    def _release(self, box: Box) -> None:
        node = box.node
        self._set_usage(box, ZERO)
        self.cluster.release(f"sb{box.agent.id}")
        if node is not None:
            self.on_node[node.id].discard(box.agent.id)
            self.idle[node.id].pop(box.agent.id, None)
            self._freed(node)
        box.node = None

    # ---- preemption by hibernation ------------------------------------------------------------

    def _victims(self, node_ids: Iterable[str], max_priority: float = math.inf) -> dict[str, list[Victim]]:
        """Idle sandboxes (long enough to be preempted) of at most `max_priority`, per node,
        least recently used first."""
        out = {}
        idle_before = self.now - self.cfg.preempt_idle_s
        for nid in node_ids:
            vs = []
            for v in self.idle[nid].values():
                if v.last_active > idle_before:
                    break  # the rest went idle later
                if v.priority <= max_priority:
                    vs.append(v)
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
        self.dispatch()

    def _hibernate(self, box: Box) -> None:
        box.state = "hibernating"
        if box.node is not None:
            self.idle[box.node.id].pop(box.agent.id, None)
        self.result.hibernations += 1
        self.ledger.deactivate(box.agent.tenant, Resources(box.agent.cpu, box.agent.memory_mb))
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
        victims = self._victims([node.id])[node.id]
        for v in reclaim(node, victims, self.now, self.cfg.preempt_idle_s, over, ZERO):
            self._hibernate(self.boxes[int(v.key[2:])])


# ---- running and reporting -----------------------------------------------------------------


def simulate(cfg: SimConfig, policy_names: Sequence[str] = policies.POLICIES,
             agents: list[Agent] | None = None, matrix: LatencyMatrix | None = None) -> list[Result]:  # fmt: skip
    agents = agents if agents is not None else generate(cfg)
    matrix = matrix or LatencyMatrix()
    return [World(name, cfg, agents, matrix).run() for name in policy_names]  # a World never changes an agent


def table(results: Sequence[Result], cfg: SimConfig) -> str:
    rows = [
        ("agents admitted", lambda s: f"{s['admitted']:,} / {s['offered']:,} ({100 * s['admit_rate']:.1f}%)"),
        ("rejected (waited wait_s)", lambda s: f"{s['rejected']:,}"),
        ("queue wait p50 / p99", lambda s: f"{s['wait_p50_s']:.2f} s / {s['wait_p99_s']:.2f} s"),
        ("user latency p50 / p99", lambda s: f"{s['latency_p50_ms']:.0f} ms / {s['latency_p99_ms']:.0f} ms"),
        ("turns served in the user's region", lambda s: f"{100 * s['local_share']:.1f}%"),
        ("memory allocated / used (of physical)",
         lambda s: f"{100 * s['alloc_util']:.0f}% / {100 * s['used_util']:.0f}%"),
        ("agents running (mean)", lambda s: f"{s['running_mean']:,.0f}"),
        ("hibernations / wakes (failed)", lambda s: f"{s['hibernations']:,} / {s['wakes']:,} ({s['failed_wakes']})"),
        ("warm-pool starts", lambda s: f"{100 * s['warm_share']:.0f}%"),
        ("memory overflow / cpu contention (node-time)",
         lambda s: f"{s['overflow_pct']:.2f}% / {s['contention_pct']:.2f}%"),
        ("decision p50 / p99", lambda s: f"{s['decision_p50_us']:.0f} µs / {s['decision_p99_us']:.0f} µs"),
    ]  # fmt: skip
    sums = [r.summary() for r in results]
    lines = ["| | " + " | ".join(r.policy for r in results) + " |", "|---|" + "---:|" * len(results)]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(s) for s in sums) + " |")
    return "\n".join(lines)


def verdict(results: Sequence[Result]) -> tuple[bool, str]:
    """Whether cloche admits more than every baseline with p99 wait and p99 user latency
    no worse than any of them."""
    by = {r.policy: r.summary() for r in results}
    if "cloche" not in by or len(by) < 2:
        return False, "cloche and at least one baseline are needed for a comparison"
    c = by["cloche"]
    problems = []
    for name, s in by.items():
        if name in ("cloche", ABLATION):
            continue
        if c["admitted"] <= s["admitted"]:
            problems.append(f"admits no more than {name}")
        if c["wait_p99_s"] > s["wait_p99_s"] + 1e-9:
            problems.append(f"p99 wait worse than {name}")
        if c["latency_p99_ms"] > s["latency_p99_ms"] + 1e-9:
            problems.append(f"p99 latency worse than {name}")
    if problems:
        return False, "cloche " + "; ".join(problems)
    return True, "cloche admits more agents than every baseline, with equal or better p99 wait and user latency"


def describe(cfg: SimConfig, agents: int) -> str:
    return (
        f"{cfg.nodes} nodes ({cfg.node_cpu:g} cpu, {cfg.node_memory_mb / 1024:g} GiB each) in "
        f"{len(cfg.regions)} regions ({', '.join(cfg.regions)}); {cfg.hours:g} simulated hours, {agents:,} agents "
        f"offered at {cfg.load:g}x the cluster's capacity without overcommit (diurnal amplitude {cfg.diurnal:g}, "
        f"regions a third of a day apart), {cfg.tenants} tenants plus one priority-1 tenant "
        f"({100 * cfg.premium_share:.0f}% of agents); {cfg.mean_turns:g} turns per agent on average (lognormal "
        f"active bursts, Pareto idle gaps), then {cfg.keepalive_s:g} s keep-alive; wait_s {cfg.wait_s:g} s; "
        f"seed {cfg.seed}. Assumed latencies: cold start {cfg.cold_ms:g} ms, warm-pool start {cfg.warm_ms:g} ms, "
        f"wake {cfg.wake_local_ms:g} ms (same node) / {cfg.wake_remote_ms:g} ms (other node), hibernate "
        f"{cfg.hibernate_ms:g} ms; user latency = queue wait + start or wake + round trip (latency matrix). "
        f"cloche runs with overcommit cpu x{cfg.cpu_overcommit:g}, memory x{cfg.memory_overcommit:g}, usage "
        f"high-water {cfg.high_water:g}, preemption of sandboxes idle >= {cfg.preempt_idle_s:g} s; the baselines "
        f"place by request without overcommit and keep a static pool of {cfg.static_pool} on every node."
    )


def markdown(results: Sequence[Result], cfg: SimConfig, agents: int, command: str) -> str:
    ok, text = verdict(results)
    return "\n".join([
        "## Scheduler: simulated policies (`cloche sim`)", "",
        f"Written by `{command}`. {describe(cfg, agents)}", "",
        table(results, cfg), "",
        f"**{'Met' if ok else 'Not met'}:** {text}.", "",
    ])  # fmt: skip


def write_section(path: Path, section: str, name: str = "cloche sim") -> None:
    """Replace the marked section `name` of a markdown file, or append it."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def run(cfg: SimConfig, policy_names: Sequence[str], trace: Path | None = None, save: Path | None = None,
        output: Path | None = None, command: str = "cloche sim") -> tuple[list[Result], str, bool]:  # fmt: skip
    """What `cloche sim` does: simulate, render, optionally write the markdown section."""
    unknown = [p for p in policy_names if p not in SIM_POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(SIM_POLICIES)}")
    agents = load_trace(trace) if trace else generate(cfg)
    if save:
        save_trace(agents, save)
    results = simulate(cfg, policy_names, agents)
    section = markdown(results, cfg, len(agents), command)
    if output is not None:
        write_section(output, section)
    return results, section, verdict(results)[0]
