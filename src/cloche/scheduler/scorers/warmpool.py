"""Warm-pool hit: a node with a ready sandbox of the ask's template starts it in
milliseconds instead of a cold create."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class WarmPool:
    name = "warm_pool"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        return 1.0 if node.pools.get(ask.template, 0) > 0 else 0.0
