"""Sizes that failed to place, remembered so that the admission loop does not place
them again while nothing changed.

Each size is kept with the nodes that have freed enough room to take it since it failed
(at most MAX_DIRTY). Feasibility depends only on the size here (no constraints in the
asks it is used for) and on each node's allocation and usage, and gets no easier as they
grow, so an ask at least as large is unplaceable unless one of those nodes takes it.
"""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node, Resources
from cloche.scheduler.pipeline import Scheduler

MAX_DIRTY = 3  # nodes to check before a full placement is cheaper


class Unplaceable:
    def __init__(self, scheduler: Scheduler) -> None:
        self._feasible = scheduler.feasible
        self._sizes: list[tuple[Ask, dict[str, Node]]] = []  # (a bare ask of that size, nodes that freed room)

    def failed(self, size: Resources) -> None:
        self._sizes.append((Ask(size), {}))

    def freed(self, node: Node) -> int:
        """The node freed room: how many failed sizes it may take now."""
        feasible, grew, may_fit = self._feasible, False, 0
        for bare, dirty in self._sizes:
            if feasible(node, bare):  # else it still refuses that size, and so every larger ask
                dirty[node.id] = node
                may_fit += 1
                grew = grew or len(dirty) > MAX_DIRTY
        if grew:
            self._sizes = [(bare, dirty) for bare, dirty in self._sizes if len(dirty) <= MAX_DIRTY]
        return may_fit

    def __contains__(self, ask: Ask) -> bool:
        """Whether placing the ask would certainly fail."""
        feasible, res = self._feasible, ask.resources
        for bare, dirty in self._sizes:
            if bare.resources.fits_in(res) and not any(feasible(n, ask) for n in dirty.values()):
                return True
        return False
