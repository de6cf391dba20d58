"""Off a terminal, `cloche cluster local` reports nodes as lines a script can follow: a
node that joins (with its region), changes state or leaves is one line each, and a
listing that changed nothing prints nothing."""

from __future__ import annotations

import io

from rich.console import Console

from cloche.cluster.local.table import EventLines, display


def lines(out: io.StringIO) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]


def test_node_changes_are_one_line_each() -> None:
    out = io.StringIO()
    view = display(Console(file=out, width=200), "t")
    assert isinstance(view, EventLines)
    eu = {"id": "node-1", "region": "eu", "state": "ready", "sandboxes": 0}
    us = {"id": "node-2", "region": "us", "state": "ready", "sandboxes": 0}
    view.nodes([eu, us])
    view.nodes([{**eu, "sandboxes": 3}, us])
    view.nodes([{**eu, "state": "draining"}, us])
    view.nodes([us])
    view.event("node-1 exited with -9")
    assert lines(out) == [
        "node node-1 joined (region eu, ready)",
        "node node-2 joined (region us, ready)",
        "node node-1 is draining",
        "node node-1 left",
        "node-1 exited with -9",
    ]
