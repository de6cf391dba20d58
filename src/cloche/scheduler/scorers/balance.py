"""Balance across resource dimensions (Kubernetes' BalancedAllocation): a node whose
cpu is full while its memory is empty strands the memory, so prefer placements that
keep the dimensions' allocation fractions close to each other. Score = 1 - 2 x the
standard deviation of the fractions (for cpu and memory alone: 1 - |cpu - memory|)."""

from __future__ import annotations

import math

from cloche.scheduler.model import INF, Ask, Node


class Balance:
    name = "balance"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        c, a, r = node.allocatable, node.allocated, ask.resources
        if not (0 < c.cpu < INF and 0 < c.memory_mb < INF):
            return 1.0
        cpu = min(1.0, (a.cpu + r.cpu) / c.cpu)
        mem = min(1.0, (a.memory_mb + r.memory_mb) / c.memory_mb)
        if not (r.gpus and 0 < c.gpus < INF):
            return 1.0 - abs(cpu - mem)
        fracs = (cpu, mem, min(1.0, (a.gpus + r.gpus) / c.gpus))
        mean = sum(fracs) / 3
        return 1.0 - min(1.0, 2 * math.sqrt(sum((f - mean) ** 2 for f in fracs) / 3))
