"""Feasibility filters: each answers "can this node take this ask at all?".

A filter returns None when the node is feasible and a short reason when it is not;
the reasons are counted per filter, so a placement can say why nodes were passed over.
"""

from __future__ import annotations

from typing import Protocol

from cloche.scheduler.model import Ask, Node


class Filter(Protocol):
    name: str

    def check(self, node: Node, ask: Ask) -> str | None: ...


from cloche.scheduler.filters.labels import LabelConstraint, RegionConstraint  # noqa: E402
from cloche.scheduler.filters.resources import ResourceFit, UsageHeadroom  # noqa: E402
from cloche.scheduler.filters.taints import NodeReady, TaintToleration  # noqa: E402

__all__ = ["Filter", "LabelConstraint", "NodeReady", "RegionConstraint", "ResourceFit", "TaintToleration",
           "UsageHeadroom"]  # fmt: skip
