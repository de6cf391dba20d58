"""Label constraints (node selectors) and region constraints."""

from __future__ import annotations

from cloche.scheduler.model import Ask, Node


class LabelConstraint:
    """Every `key=value` in ask.constraints must be a label of the node. A value may
    list alternatives separated by `|` (`zone=a|b`)."""

    name = "labels"

    def check(self, node: Node, ask: Ask) -> str | None:
        for key, want in ask.constraints.items():
            have = node.labels.get(key)
            if have is None or (have != want and have not in want.split("|")):
                return f"label {key}"
        return None


class RegionConstraint:
    """When the ask names regions (data residency, say), only nodes in them qualify."""

    name = "region"

    def check(self, node: Node, ask: Ask) -> str | None:
        if ask.regions and node.labels.get("region") not in ask.regions:
            return "region"
        return None
