"""Locality: a node that already holds the sandbox's upper layer (or the snapshot it
starts from) resumes it from local disk instead of fetching it from the blob store."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class Locality:
    name = "locality"
    normalize = False

    def neutral(self, ask: Ask) -> float | None:
        return 0.0 if not ask.locality else None

    def score(self, node: Node, ask: Ask) -> float:
        if not ask.locality:
            return 0.0
        hits = sum(1 for item in ask.locality if item in node.local)
        return hits / len(ask.locality)
