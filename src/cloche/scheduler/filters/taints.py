"""Taints and node condition: draining, not ready, or silent nodes take nothing new."""

from __future__ import annotations

import time

from cloche.scheduler.model import Ask, Node


class TaintToleration:
    """A NoSchedule taint keeps out every ask that does not tolerate it."""

    name = "taints"

    def check(self, node: Node, ask: Ask) -> str | None:
        for taint in node.taints:
            if taint.effect == "NoSchedule" and not any(t.tolerates(taint) for t in ask.tolerations):
                return f"taint {taint.key}"
        return None


class NodeReady:
    """Excluded nodes (a move away), draining nodes, nodes not ready, and nodes whose
    last heartbeat is older than `heartbeat_timeout_s` (None: heartbeats not checked,
    as in the simulator and on the embedded node)."""

    name = "node"

    def __init__(self, heartbeat_timeout_s: float | None = None) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def check(self, node: Node, ask: Ask) -> str | None:
        if ask.exclude and node.id in ask.exclude:
            return "excluded"
        if node.draining:
            return "draining"
        if not node.ready:
            return "not ready"
        if self.heartbeat_timeout_s is not None and time.time() - node.heartbeat_at > self.heartbeat_timeout_s:
            return "no heartbeat"
        return None
