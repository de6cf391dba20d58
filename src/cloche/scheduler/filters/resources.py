"""Resource feasibility: requests against overcommitted allocatable, and live usage
against the physical machine."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class ResourceFit:
    """allocated + request <= capacity x overcommit, in every dimension (GPUs never
    overcommit)."""

    name = "resources"

    def check(self, node: Node, ask: Ask) -> str | None:
        a, r, c = node.allocated, ask.resources, node.allocatable
        if a.memory_mb + r.memory_mb > c.memory_mb + 1e-9:
            return "memory"
        if a.cpu + r.cpu > c.cpu + 1e-9:
            return "cpu"
        if r.disk_mb and a.disk_mb + r.disk_mb > c.disk_mb + 1e-9:
            return "disk"
        if r.gpus and a.gpus + r.gpus > c.gpus + 1e-9:
            return "gpus"
        return None


class UsageHeadroom:
    """Live usage feedback: overcommit is only safe while sandboxes really use little.
    A node whose measured memory use, plus what the new sandbox is expected to use at
    first (`expected` x its request), would pass `high_water` of the physical memory
    takes nothing more until usage falls (or idle sandboxes are hibernated)."""

    name = "usage"

    def __init__(self, high_water: float = 0.85, expected: float = 0.25) -> None:
        self.high_water = high_water
        self.expected = expected

    def check(self, node: Node, ask: Ask) -> str | None:
        limit = node.capacity.memory_mb * self.high_water
        if node.usage.memory_mb + ask.resources.memory_mb * self.expected > limit:
            return "memory in use"
        return None
