"""Bin-pack (MostAllocated) or spread (LeastAllocated), on cpu and memory after the
placement, as fractions of allocatable."""

from __future__ import annotations

from cloche.scheduler.model import INF, Ask, Node


def fill_after(node: Node, ask: Ask) -> float:
    """Mean of cpu and memory allocation fractions once the ask is placed, in [0, 1]."""
    c, a, r = node.allocatable, node.allocated, ask.resources
    if 0 < c.cpu < INF and 0 < c.memory_mb < INF:  # the common case, fast
        cpu = (a.cpu + r.cpu) / c.cpu
        mem = (a.memory_mb + r.memory_mb) / c.memory_mb
        return ((cpu if cpu < 1.0 else 1.0) + (mem if mem < 1.0 else 1.0)) / 2
    total, dims = 0.0, 0
    if 0 < c.cpu < INF:
        total += min(1.0, (a.cpu + r.cpu) / c.cpu)
        dims += 1
    if 0 < c.memory_mb < INF:
        total += min(1.0, (a.memory_mb + r.memory_mb) / c.memory_mb)
        dims += 1
    return total / dims if dims else 0.0


class BinPack:
    """Prefer fuller nodes: keeps whole nodes free for large asks and lets empty nodes
    be drained or powered down."""

    name = "binpack"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        return fill_after(node, ask)


class Spread:
    """Prefer emptier nodes (Kubernetes' default LeastAllocated)."""

    name = "spread"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        return 1.0 - fill_after(node, ask)
