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
from dataclasses import dataclass, replace

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


def plan(scheduler: Scheduler, ask: Ask, victims_by_node: Mapping[str, Iterable[Victim]], now: float,
         idle_s: float) -> PreemptionPlan | None:  # fmt: skip
    best: tuple[tuple[int, float], PreemptionPlan] | None = None
    for node_id, candidates in victims_by_node.items():
        node = scheduler.cluster.by_id.get(node_id)
        if node is None:
            continue
        freed, freed_mb, chosen = ZERO, 0.0, []
        for victim in eligible(candidates, ask.priority, now, idle_s):
            chosen.append(victim)
            freed = freed + victim.resources
            freed_mb += victim.usage_mb
            usage = replace(node.usage, memory_mb=max(0.0, node.usage.memory_mb - freed_mb))
            what_if = replace(node, allocated=node.allocated - freed, usage=usage)
            if scheduler.infeasible(what_if, ask) is None:
                rank = (len(chosen), chosen[-1].last_active)
                if best is None or rank < best[0]:
                    best = (rank, PreemptionPlan(node, list(chosen)))
                break
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
