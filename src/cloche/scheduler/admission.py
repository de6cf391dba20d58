"""Admission: per-tenant quotas, priorities, and a fair queue for creates that do not
fit yet.

The queue serves higher priorities first; within one priority it goes round robin
across tenants (FIFO within a tenant), so a tenant that floods the queue delays
itself, not its neighbours. `dispatch` walks the queue in that order and admits what
fits; a waiter that does not fit lets later waiters of the same priority go ahead
(backfill) but never lower priorities, so large asks of a high priority are not
starved by a stream of small low-priority ones.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cloche.scheduler.model import Resources

T = TypeVar("T")


# ---- quotas ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    max_sandboxes: int = 100
    max_cpu: float = 64.0
    max_memory_mb: float = 64 * 1024


@dataclass
class TenantUsage:
    sandboxes: int = 0  # every sandbox the tenant has, asleep or not
    cpu: float = 0.0  # requests of its active (running or paused) sandboxes
    memory_mb: float = 0.0

    def __add__(self, o: TenantUsage) -> TenantUsage:
        return TenantUsage(self.sandboxes + o.sandboxes, self.cpu + o.cpu, self.memory_mb + o.memory_mb)


def over_quota(u: TenantUsage, quota: Quota, res: Resources, new: bool = True) -> str | None:
    """None if `res` more (a new sandbox when `new`, else a wake) on top of `u` fits the quota."""
    if new and u.sandboxes + 1 > quota.max_sandboxes:
        return f"quota max_sandboxes={quota.max_sandboxes} reached"
    if u.cpu + res.cpu > quota.max_cpu + 1e-9:
        return f"quota max_cpu={quota.max_cpu:g} would be exceeded ({u.cpu + res.cpu:g} cpus in total)"
    if u.memory_mb + res.memory_mb > quota.max_memory_mb + 1e-9:
        total = u.memory_mb + res.memory_mb
        return f"quota max_memory_mb={quota.max_memory_mb:g} would be exceeded ({total:g} MB in total)"
    return None


class QuotaLedger:
    """What each tenant holds, checked against its quota before anything is placed.
    Admission charges the ledger at once (before the sandbox exists), so concurrent
    creates cannot together exceed a quota."""

    def __init__(self) -> None:
        self.usage: dict[str, TenantUsage] = {}

    def of(self, tenant: str) -> TenantUsage:
        return self.usage.setdefault(tenant, TenantUsage())

    def check(self, tenant: str, quota: Quota, res: Resources, new: bool = True) -> str | None:
        """None if `res` more (a new sandbox when `new`, else a wake) fits the quota."""
        return over_quota(self.of(tenant), quota, res, new)

    def admit(self, tenant: str, quota: Quota, res: Resources, new: bool = True) -> str | None:
        """check, and charge when it passes."""
        reason = self.check(tenant, quota, res, new)
        if reason is None:
            self.activate(tenant, res, new)
        return reason

    def activate(self, tenant: str, res: Resources, new: bool = False) -> None:
        u = self.of(tenant)
        u.sandboxes += 1 if new else 0
        u.cpu += res.cpu
        u.memory_mb += res.memory_mb

    def deactivate(self, tenant: str, res: Resources) -> None:
        """A sandbox went to sleep: it keeps its place in max_sandboxes only."""
        u = self.of(tenant)
        u.cpu = max(0.0, u.cpu - res.cpu)
        u.memory_mb = max(0.0, u.memory_mb - res.memory_mb)

    def remove(self, tenant: str, res: Resources, active: bool) -> None:
        u = self.of(tenant)
        u.sandboxes = max(0, u.sandboxes - 1)
        if active:
            self.deactivate(tenant, res)


# ---- the fair queue -------------------------------------------------------------------


@dataclass
class _Entry(Generic[T]):
    item: T
    tenant: str
    priority: int
    seq: int = field(default=0)


class FairQueue(Generic[T]):
    """Priority levels, each a round robin of tenants, each a FIFO of items."""

    def __init__(self) -> None:
        self._levels: dict[int, OrderedDict[str, deque[_Entry[T]]]] = {}
        self._where: dict[int, _Entry[T]] = {}  # id(item) -> entry
        self._seq = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: object) -> bool:
        return id(item) in self._where

    def push(self, item: T, tenant: str, priority: int = 0) -> None:
        if id(item) in self._where:
            raise ValueError("item already queued")
        self._seq += 1
        entry = _Entry(item, tenant, priority, self._seq)
        level = self._levels.setdefault(priority, OrderedDict())
        level.setdefault(tenant, deque()).append(entry)
        self._where[id(item)] = entry

    def remove(self, item: T) -> bool:
        """Take an item out without counting it as served (it gave up waiting)."""
        entry = self._where.pop(id(item), None)
        if entry is None:
            return False
        level = self._levels[entry.priority]
        items = level[entry.tenant]
        items.remove(entry)
        if not items:
            del level[entry.tenant]
            if not level:
                del self._levels[entry.priority]
        return True

    def served(self, item: T) -> None:
        """The item was admitted: remove it and send its tenant to the back of its round."""
        entry = self._where.get(id(item))
        if entry is None:
            raise KeyError("item is not queued")
        self.remove(item)
        level = self._levels.get(entry.priority)
        if level is not None and entry.tenant in level:
            level.move_to_end(entry.tenant)

    def order(self) -> Iterator[tuple[T, str, int]]:
        """(item, tenant, priority) in service order, lazily; do not change the queue
        while iterating (dispatch defers `served` to the end of its walk)."""
        for priority in sorted(self._levels, reverse=True):
            queues = list(self._levels[priority].values())
            k = 0
            while queues:  # the k-th item of every tenant that has one, then the k+1-th
                longer = []
                for q in queues:
                    e = q[k]
                    yield e.item, e.tenant, priority
                    if len(q) > k + 1:
                        longer.append(q)
                queues = longer
                k += 1

    def pop(self) -> T:
        """Serve the head of the queue."""
        for item, _, _ in self.order():
            self.served(item)
            return item
        raise IndexError("pop from an empty queue")

    def position(self, item: T) -> int:
        for i, (x, _, _) in enumerate(self.order()):
            if x is item:
                return i
        raise KeyError("item is not queued")


def dispatch(queue: FairQueue[T], try_admit: Callable[[T], bool | None]) -> list[T]:
    """Admit waiters in fair order while they fit. A waiter that does not fit blocks
    every waiter of a lower priority (same-priority waiters may still backfill).
    try_admit returns True (admitted), False (does not fit) or None (nothing more can
    fit now: stop the walk)."""
    admitted = []
    blocked_below: int | None = None
    for item, _, priority in queue.order():
        if blocked_below is not None and priority < blocked_below:
            break
        ok = try_admit(item)
        if ok:
            admitted.append(item)
        elif ok is None:
            break
        elif blocked_below is None:
            blocked_below = priority
    for item in admitted:
        queue.served(item)
    return admitted
