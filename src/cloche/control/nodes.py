"""What the node has and uses, for metrics, the nodes list and the dashboard.

Why it exists: node-wide readings (records by state, capacity, warm pool, live usage,
traffic counters) are asked of control like everything else, so the server never holds
the node. These are reads for operators; tenant-facing calls check ownership in
`SandboxService` instead."""

from __future__ import annotations

from typing import Any

from cloche.node.api import DiskUsage, Node, PoolStatus, SandboxUsage
from cloche.node.net.firewall import Counters
from cloche.node.records import SandboxRecord

ACTIVE = ("running", "paused")


class NodeStatus:
    def __init__(self, node: Node) -> None:
        self.node = node

    def records(self) -> list[SandboxRecord]:
        """Users' sandboxes (not the warm pool's)."""
        return self.node.list()

    def record(self, sandbox_id: str) -> SandboxRecord:
        """One sandbox's record (node.errors.SandboxNotFound when there is none)."""
        return self.node.get(sandbox_id)

    def capacity(self) -> dict[str, float]:
        return self.node.capacity()

    def pool(self) -> PoolStatus:
        return self.node.pool_status()

    def usage(self, sandbox_id: str) -> SandboxUsage:
        """Blocking read of a live sandbox's cgroup."""
        return self.node.usage(sandbox_id)

    def disk_usage(self, sandbox_id: str) -> DiskUsage:
        return self.node.disk_usage(sandbox_id)

    def network_counters(self) -> dict[str, Counters]:
        """Traffic counters by sandbox id (empty with networking off)."""
        return self.node.network_counters()

    def summary(self) -> dict[str, Any]:
        """The node as the nodes list shows it when no scheduler runs."""
        records = self.node.list()
        active = [r for r in records if r.state in ACTIVE]
        pool = self.node.pool_status()
        return {
            "id": self.node.key,
            "state": "ready",
            "capacity": self.node.capacity(),
            "allocated": {
                "cpu": sum(r.spec.limits.cpu for r in active),
                "memory_mb": sum(r.spec.limits.memory_mb for r in active),
            },
            "sandboxes": len(records),
            "pools": [{"template": pool.template, "ready": pool.ready, "size": pool.size}],
        }
