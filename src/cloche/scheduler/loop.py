"""The scheduler's decision loop, with no I/O and no clock of its own, so that the
server and the simulator run the same decisions.

`AdmissionLoop` owns the fair queue of creates (and, in the simulator, wakes), the
quota reservations of what is in flight, placement with its Reserve step, preemption
by hibernation for a waiter that does not fit, the guard of an overloaded node, and
warm-pool sizing. It acts on the world only through `Effects` (start a placed waiter,
list idle victims, hibernate some, say what a tenant holds, set pool sizes) and reads
time from an injected clock: `scheduler/local.py` binds it to the node runtime and
asyncio, `scheduler/sim/world.py` to simulated sandboxes and a virtual clock.

Whoever changes a node tells the loop: `changed()` when anything may now fit, `freed`
when a node has more room. That lets a pass that did nothing be skipped until
something it depends on changes, and a size that failed to place be remembered until a
node frees room for it (`Unplaceable`): both only for plain asks (no constraints), whose
feasibility depends on their size alone and gets no easier as the size grows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from cloche.scheduler.admission import FairQueue, Quota, QuotaLedger, TenantUsage, dispatch, over_quota
from cloche.scheduler.errors import InsufficientCapacity, QuotaExceeded
from cloche.scheduler.filters import UsageHeadroom
from cloche.scheduler.model import INF, ZERO, Ask, Node, Resources
from cloche.scheduler.pipeline import Placement, Scheduler
from cloche.scheduler.pools import PoolSizer
from cloche.scheduler.preemption import Victim, plan, reclaim
from cloche.scheduler.unplaceable import Unplaceable


@dataclass(eq=False, slots=True)
class Waiter:
    """A create (or a wake) waiting for room. `key` names its reservation on the node."""

    ask: Ask
    key: str
    since: float
    wake: bool = False
    plain: bool = field(init=False)  # no constraints: feasibility depends on the size alone
    tried_preempt: float = -math.inf
    preempting: bool = False  # victims are being hibernated for it
    victims: list[str] = field(default_factory=list)  # hibernated to make room for it
    last: Placement | None = None  # its last failed placement (why it waits)
    finished: bool = False  # its quota reservation ended

    def __post_init__(self) -> None:
        a = self.ask
        self.plain = not (a.regions or a.constraints or a.tolerations or a.exclude)

    def reason(self) -> str:
        return self.last.reason() if self.last is not None else "no room"


W = TypeVar("W", bound=Waiter)


class Effects(Protocol[W]):
    """What the loop asks of the world it schedules."""

    def placed(self, waiter: W, placement: Placement) -> None:
        """The waiter is placed (and reserved on placement.node): create or wake it."""

    def victims(self, max_priority: float, node_ids: Iterable[str] | None = None) -> Mapping[str, list[Victim]]:
        """Idle sandboxes of at most that priority, per node (of node_ids, or every node)."""
        ...

    def hibernate(self, victims: list[Victim], waiter: W | None) -> None:
        """Put them to sleep; for a waiter, call `preempted(waiter, ...)` once they are."""

    def quota_usage(self, tenant: str) -> TenantUsage:
        """What the tenant's sandboxes hold now (creates in flight not counted)."""
        ...

    def pool_targets(self, node: Node, targets: dict[str, int]) -> None:
        """Warm-pool sizes for the node, per template."""


@dataclass
class LoopConfig:
    preempt: bool = True  # preemption, the guard and pool sizing (the cloche policy)
    idle_s: float = 120.0  # a sandbox idle this long may be hibernated
    high_water: float = 0.85  # of a node's memory, in live use
    retry_s: float = 10.0  # a waiter plans a preemption at most this often
    pool_every_s: float = 0.0  # pool sizing at most this often
    min_size: Resources | None = None  # no ask is smaller: once it fails, a pass stops


class AdmissionLoop(Generic[W]):
    def __init__(self, scheduler: Scheduler, effects: Effects[W], clock: Callable[[], float] = time.monotonic,
                 config: LoopConfig | None = None, sizers: dict[str, PoolSizer] | None = None) -> None:  # fmt: skip
        self.scheduler = scheduler
        self.cluster = scheduler.cluster
        self.effects = effects
        self.clock = clock
        self.config = cfg = config or LoopConfig()
        self.sizers = sizers or {}  # node id -> its pool sizer
        self.queue: FairQueue[W] = FairQueue()
        self.reserved = QuotaLedger()  # creates in flight, queued or placed, per tenant
        self.decisions_us: list[float] | None = None  # a list to time every placement into
        self._unplaceable = Unplaceable(scheduler)
        self._min_ask = Ask(cfg.min_size) if cfg.min_size is not None else None
        self._usage_filtered = any(isinstance(f, UsageHeadroom) for f in scheduler.filters)
        self._last_pool = -math.inf
        # A pass that neither admitted nor planned is repeated only once something it depends
        # on changed (`_changes`) or a waiter may plan a preemption again: (changes, time).
        self._changes = 0
        self._quiet: tuple[int, float] | None = None

    # ---- what the world tells the loop ---------------------------------------------------

    def changed(self) -> None:
        """Something a pass depends on changed: the next dispatch runs in full."""
        self._changes += 1

    def freed(self, node: Node) -> None:
        """The node has more room (allocation or usage went down)."""
        self._changes += self._unplaceable.freed(node)

    def usage_fell(self, node: Node) -> None:
        """The node's live usage went down: room, if a filter looks at usage."""
        if self._usage_filtered:
            self.freed(node)

    # ---- admission ------------------------------------------------------------------------

    def submit(self, waiter: W, quota: Quota) -> None:
        """Queue the waiter (after the capacity and quota checks) and try to place it."""
        ask, res = waiter.ask, waiter.ask.resources
        bounded = Resources(res.cpu, res.memory_mb, res.disk_mb if res.disk_mb < INF else 0, res.gpus)
        if not any(bounded.fits_in(n.allocatable) for n in self.cluster.nodes):
            big = max(self.cluster.nodes, key=lambda n: n.allocatable.memory_mb, default=None)
            a = big.allocatable if big is not None else ZERO
            raise InsufficientCapacity(f"no node can ever hold {res.cpu:g} cpu / {res.memory_mb:g} MB: the largest "
                                       f"allocatable is {a.cpu:g} cpu / {a.memory_mb:g} MB")  # fmt: skip
        new = not waiter.wake
        reason = over_quota(self.effects.quota_usage(ask.tenant) + self.reserved.of(ask.tenant), quota, res, new)
        if reason is not None:
            raise QuotaExceeded(reason)
        self.reserved.activate(ask.tenant, res, new)
        # wakes go ahead of creates of the same priority: a user is already waiting on them
        self.queue.push(waiter, ask.tenant, 2 * ask.priority + (1 if waiter.wake else 0))
        self._changes += 1
        self.dispatch()

    def give_up(self, waiter: W) -> bool:
        """The waiter stops waiting; False if it was not queued (placed, or gone already)."""
        if not self.queue.remove(waiter):
            return False
        self._changes += 1
        self.finish(waiter)
        return True

    def finish(self, waiter: W) -> None:
        """The waiter's create or wake is done (or abandoned): its quota reservation ends."""
        if waiter.finished:
            return
        waiter.finished = True
        tenant, res = waiter.ask.tenant, waiter.ask.resources
        if waiter.wake:  # a wake reserved no sandbox of its own
            self.reserved.deactivate(tenant, res)
        else:
            self.reserved.remove(tenant, res, True)

    def dispatch(self) -> None:
        """Admit queued waiters, in fair order, while they fit; plan one preemption per
        pass for a waiter that does not."""
        if not len(self.queue):
            return
        if not self.config.preempt and self._min_ask is not None and self._min_ask in self._unplaceable:
            return  # nothing fits, and without preemption a pass would do nothing else
        quiet = self._quiet
        if quiet is not None and quiet[0] == self._changes and self.clock() < quiet[1] - 1e-6:
            return  # the last pass did nothing, and until a waiter may preempt again neither would this one
        self._now = self.clock()
        self._failed: list[Resources] = []  # sizes of plain asks that failed in this pass
        self._covered: dict[int, bool | None] = {}  # id(size) -> _try's answer, once a size in _failed covers it
        self._planned = False  # at most one preemption plan per pass (each plan scans every sandbox)
        self._busy = False  # the pass admitted or planned
        self._retry_at = math.inf  # when a waiter that reached preemption may try it again
        dispatch(self.queue, self._try)
        self._quiet = None if self._busy else (self._changes, self._retry_at)

    def _try(self, w: W) -> bool | None:
        if w.preempting:
            return False
        ask, res = w.ask, w.ask.resources
        min_size = self.config.min_size
        if w.plain:  # an ask at least as large as one that just failed fails too
            covered = self._covered
            if id(res) in covered:
                return covered[id(res)]
            for failed in self._failed:
                if failed.fits_in(res):
                    answer = None if min_size is not None and failed.fits_in(min_size) else False
                    covered[id(res)] = answer
                    return answer
        p = None
        if not (w.plain and ask in self._unplaceable):  # else placing would fail again
            t0 = time.perf_counter()
            p = self.scheduler.place(ask)
            if self.decisions_us is not None:
                self.decisions_us.append((time.perf_counter() - t0) * 1e6)
        if p is None or p.node is None:
            if p is not None:
                w.last = p
                if w.plain:
                    self._unplaceable.failed(res)
            now = self._now
            if self.config.preempt and not self._planned and now - w.tried_preempt >= self.config.retry_s:
                w.tried_preempt = now
                self._planned = self._busy = True
                if self._preempt_for(w):
                    return False
            self._retry_at = min(self._retry_at, w.tried_preempt + self.config.retry_s)
            if not w.plain:
                return False
            self._failed.append(res)
            return None if min_size is not None and res.fits_in(min_size) else False
        self._busy = True
        self.cluster.reserve(p.node, w.key, res)
        p.waited_s = self._now - w.since
        p.victims = list(w.victims)
        self.effects.placed(w, p)
        return True

    # ---- preemption and the nodes' health -------------------------------------------------

    def _preempt_for(self, w: W) -> bool:
        victims = self.effects.victims(w.ask.priority)
        p = plan(self.scheduler, w.ask, victims, self._now, self.config.idle_s)
        if p is None:
            return False
        w.preempting = True
        self.effects.hibernate(p.victims, w)
        return True

    def preempted(self, waiter: W, hibernated: Iterable[str]) -> None:
        """The victims hibernated for the waiter are asleep: try again."""
        waiter.preempting = False
        waiter.victims.extend(hibernated)
        self._changes += 1
        self.dispatch()

    def guard(self, node: Node) -> None:
        """Wakes and forks that bypass the queue, and live usage, can overfill a node: above
        its allocatable or its memory high-water mark, hibernate idle sandboxes, lowest
        priority and least recently used first."""
        over_mb = node.usage.memory_mb - node.capacity.memory_mb * self.config.high_water
        alloc, cap = node.allocated, node.allocatable
        over_alloc = ZERO if alloc.fits_in(cap) else Resources(max(0.0, alloc.cpu - cap.cpu),
                                                               max(0.0, alloc.memory_mb - cap.memory_mb))  # fmt: skip
        if over_mb <= 0 and over_alloc == ZERO:
            return
        victims = self.effects.victims(math.inf, [node.id]).get(node.id, [])
        chosen = reclaim(node, victims, self.clock(), self.config.idle_s, max(0.0, over_mb), over_alloc)
        if chosen:
            self.effects.hibernate(chosen, None)

    def tick(self) -> None:
        """The periodic step: size the warm pools (when due), guard every node, dispatch."""
        if self.config.preempt:
            now = self.clock()
            if self.sizers and now - self._last_pool >= self.config.pool_every_s:
                self._last_pool = now
                for node in self.cluster.nodes:
                    sizer = self.sizers.get(node.id)
                    if sizer is not None:
                        self.effects.pool_targets(node, sizer.tick(now))
            for node in self.cluster.nodes:
                self.guard(node)
        self.dispatch()

    def waiting_by_priority(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w, _, _ in self.queue.order():
            out[str(w.ask.priority)] = out.get(str(w.ask.priority), 0) + 1
        return out
