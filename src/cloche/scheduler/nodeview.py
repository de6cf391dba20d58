"""The embedded node as the scheduler sees it: capacity from the settings or the host,
allocation from the sandboxes' requests, live usage (cpu, and the memory the kernel
cannot reclaim) from their cgroups. The scheduler decides on `Node`s; this is where the
one node of embedded mode comes from."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from cloche.node.spec import Limits
from cloche.scheduler.model import INF, ZERO, Node, Overcommit, Resources

if TYPE_CHECKING:
    from cloche.config import Settings
    from cloche.node.api import Node as NodeApi

ACTIVE = ("running", "paused")


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024


def request_of(limits: Limits) -> Resources:
    return Resources(limits.cpu, limits.memory_mb, limits.disk_mb)


class NodeView:
    """The embedded NodeRuntime as a scheduler Node."""

    def __init__(self, runtime: NodeApi, settings: Settings) -> None:
        self.runtime = runtime
        disk = settings.node_disk_mb or INF
        cpu = settings.node_cpu or float(os.cpu_count() or 1)
        capacity = Resources(cpu, settings.node_memory_mb or _mem_total_mb(), disk)
        ratio = Overcommit(settings.cpu_overcommit, settings.memory_overcommit, settings.disk_overcommit)
        self.node = Node(runtime.key, capacity, {"region": settings.node_region}, ratio)
        self.usage: dict[str, tuple[float, float]] = {}  # sandbox id -> (cpu cores, memory MB)
        self._cpu_seen: dict[str, tuple[float, int]] = {}  # sandbox id -> (time, cpu usec)

    def refresh(self, pending: Resources = ZERO) -> Node:
        """Allocation from the runtime's records (plus reservations not yet created)."""
        alloc = pending
        local = set()
        for rec in self.runtime.list():
            local.add(rec.id)
            if rec.state in ACTIVE:
                alloc = alloc + request_of(rec.spec.limits)
            elif rec.state in ("stopped", "hibernated"):
                alloc = alloc + Resources(0, 0, rec.spec.limits.disk_mb)  # its disk stays here
        node = self.node
        node.allocated = alloc
        node.local = local
        pool = self.runtime.pool_status()
        node.pools = {pool.template: pool.ready}
        node.heartbeat_at = time.time()
        return node

    def sample_usage(self) -> None:
        """Read every live sandbox's cgroup (blocking: run it in a thread)."""
        now = time.monotonic()
        usage: dict[str, tuple[float, float]] = {}
        cpu_total = mem_total = 0.0
        for rec in self.runtime.all_records():
            if rec.state not in ACTIVE:
                continue
            try:
                u = self.runtime.usage(rec.id)
            except Exception:
                continue
            prev = self._cpu_seen.get(rec.id)
            cores = (u.cpu_usec - prev[1]) / 1e6 / (now - prev[0]) if prev and now > prev[0] else 0.0
            self._cpu_seen[rec.id] = (now, u.cpu_usec)
            # what the kernel cannot reclaim (no swap): page cache would come back under pressure
            mem = u.anon_memory_bytes / 2**20
            usage[rec.id] = (max(0.0, cores), mem)
            cpu_total += max(0.0, cores)
            mem_total += mem
        for gone in set(self._cpu_seen) - set(usage):
            del self._cpu_seen[gone]
        self.usage = usage
        self.node.usage = Resources(cpu_total, mem_total)
