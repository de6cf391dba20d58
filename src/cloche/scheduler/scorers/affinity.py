"""Soft preferences: labels the ask would like (affinity), and PreferNoSchedule taints
it would rather avoid."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class LabelAffinity:
    """The fraction of the ask's preferred labels the node carries (1 with none asked)."""

    name = "affinity"
    normalize = False

    def neutral(self, ask: Ask) -> float | None:
        return 1.0 if not ask.affinity else None

    def score(self, node: Node, ask: Ask) -> float:
        if not ask.affinity:
            return 1.0
        hits = sum(1 for k, v in ask.affinity.items() if node.labels.get(k) == v)
        return hits / len(ask.affinity)


class TaintPreference:
    """0 for a node with a PreferNoSchedule taint the ask does not tolerate, else 1."""

    name = "taint_preference"
    normalize = False

    def score(self, node: Node, ask: Ask) -> float:
        for taint in node.taints:
            if taint.effect == "PreferNoSchedule" and not any(t.tolerates(taint) for t in ask.tolerations):
                return 0.0
        return 1.0
