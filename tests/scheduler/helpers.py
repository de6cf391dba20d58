"""Small builders shared by the scheduler's unit tests."""

from __future__ import annotations

from typing import Any

from cloche.scheduler.model import Ask, Node, Overcommit, Resources


def node(name: str = "n1", cpu: float = 8, mem: float = 8192, region: str = "us", **kw: Any) -> Node:
    labels = {"region": region, **kw.pop("labels", {})}
    return Node(name, Resources(cpu, mem, kw.pop("disk", 100_000)), labels, kw.pop("overcommit", Overcommit()), **kw)


def ask(cpu: float = 1, mem: float = 1024, **kw: Any) -> Ask:
    return Ask(Resources(cpu, mem, kw.pop("disk", 0)), **kw)
