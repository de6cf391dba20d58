"""Live usage feedback: prefer nodes whose sandboxes really use little cpu and memory
right now (read from cgroups), whatever their requests add up to."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class LiveUsage:
    name = "usage"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        cap, use = node.capacity, node.usage
        cpu = use.cpu / cap.cpu if cap.cpu > 0 else 0.0
        mem = use.memory_mb / cap.memory_mb if cap.memory_mb > 0 else 0.0
        return max(0.0, 1.0 - max(cpu, mem))
