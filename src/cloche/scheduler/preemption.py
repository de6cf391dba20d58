"""Preemption by hibernation: make room for an ask by putting idle sandboxes to sleep.

Only sandboxes that are idle (no activity for `idle_s`) and of a priority lower than
or equal to the ask's are candidates, least recently used first. Hibernation keeps
every file (a snapshot, and the disk stays on the node), so a preempted agent wakes
on its next request with its state intact: preemption never destroys state.

`plan` picks the node that needs the fewest victims (then the longest idle ones),
checking each candidate node with the scheduler's own filters on a what-if copy of
the node with the victims' requests and usage removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from cloche.scheduler.model import ZERO, Ask, Node, Resources
from cloche.scheduler.pipeline import Scheduler


@dataclass(frozen=True)
class Victim:
    key: str  # sandbox id
    node_id: str
    resources: Resources  # its request (what hibernating it frees in allocation)
    priority: int
    last_active: float
    usage_mb: float = 0.0  # its live memory use (what hibernating it frees in usage)


@dataclass
class PreemptionPlan:
    node: Node
    victims: list[Victim]


def eligible(victims: Iterable[Victim], priority: int, now: float, idle_s: float) -> list[Victim]:
    """Idle victims of priority <= `priority`, least recently used first."""
    return sorted((v for v in victims if v.priority <= priority and now - v.last_active >= idle_s),
                  key=lambda v: v.last_active)  # fmt: skip


def _fits_after(scheduler: Scheduler, node: Node, ask: Ask, freed: Resources, freed_mb: float) -> bool:
    """Whether the ask passes the filters on a what-if copy of the node with `freed`
    allocation and `freed_mb` of memory use given back."""
    u = node.usage
    what_if = _copy(node)
    what_if.allocated = node.allocated - freed
    what_if.usage = Resources(u.cpu, max(0.0, u.memory_mb - freed_mb), u.disk_mb, u.gpus)
    return scheduler.feasible(what_if, ask)


_COPIED = tuple(name for name in Node.__slots__ if name != "allocatable")  # every field but the derived one
_copied = attrgetter(*_COPIED)


def _copy(node: Node) -> Node:
    """What dataclasses.replace(node) makes (allocatable derived afresh), without its
    generic machinery: this runs for every node a preemption plan checks."""
    copy = object.__new__(Node)
    for name, value in zip(_COPIED, _copied(node), strict=True):
        setattr(copy, name, value)
    copy.refresh()
    return copy


def plan(scheduler: Scheduler, ask: Ask, victims_by_node: Mapping[str, Iterable[Victim]], now: float,
         idle_s: float) -> PreemptionPlan | None:  # fmt: skip
    """The filters only pass more easily as room is freed (less allocated, less in use),
    so the fewest victims on a node is found by bisection over its eligible victims,
    least recently used first, and a node where all of them (or as many as the best plan
    so far needs) are not enough is passed over after one check. Nodes are visited
    longest idle victim first, so that the best plan tends to come first and the other
    nodes are passed over; ties go to the node listed first in `victims_by_node`, as if
    they were visited in that order."""
    candidates = []
    for index, (node_id, victims) in enumerate(victims_by_node.items()):
        node = scheduler.cluster.by_id.get(node_id)
        order = eligible(victims, ask.priority, now, idle_s) if node is not None else []
        if order:
            candidates.append((order[0].last_active, index, node, order))
    candidates.sort(key=lambda c: c[:2])
    best: tuple[tuple[int, float, int], PreemptionPlan] | None = None  # ((victims, last one's idle, index), plan)
    for _, index, node, order in candidates:
        hi = len(order)
        if best is not None and hi >= best[0][0]:  # more victims, or as many idle for less long, cannot win
            n, last, first = best[0]
            hi = n if (order[n - 1].last_active, index) < (last, first) else n - 1
        if not hi:
            continue
        freed, freed_mb = [ZERO], [0.0]  # what the first k victims free
        for victim in order[:hi]:
            freed.append(freed[-1] + victim.resources)
            freed_mb.append(freed_mb[-1] + victim.usage_mb)
        if not _fits_after(scheduler, node, ask, freed[hi], freed_mb[hi]):
            continue
        lo = 1
        while lo < hi:
            mid = (lo + hi) // 2
            if _fits_after(scheduler, node, ask, freed[mid], freed_mb[mid]):
                hi = mid
            else:
                lo = mid + 1
        rank = (lo, order[lo - 1].last_active, index)
        if best is None or rank < best[0]:
            best = (rank, PreemptionPlan(node, order[:lo]))
    return best[1] if best else None


def reclaim(node: Node, victims: Iterable[Victim], now: float, idle_s: float, need_mb: float,
            need_alloc: Resources) -> list[Victim]:  # fmt: skip
    """Victims to hibernate on an overloaded node (usage above its high-water mark by
    `need_mb`, or allocation above allocatable by `need_alloc`): idle ones, lowest
    priority first, then least recently used."""
    order = sorted((v for v in victims if now - v.last_active >= idle_s), key=lambda v: (v.priority, v.last_active))
    chosen: list[Victim] = []
    freed_mb, freed = 0.0, ZERO
    for v in order:
        if freed_mb >= need_mb and need_alloc.fits_in(freed):
            break
        chosen.append(v)
        freed_mb += v.usage_mb
        freed = freed + v.resources
    return chosen
