"""What `cloche cluster local` shows while it runs: on a terminal, a live table of the
nodes the API lists (id, region, state, sandboxes) with the latest events under it; in a
log or a pipe, one line per event (a process started or exited, a node joined, changed
state or left), so a script or a test can follow the cluster line by line.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

Node = dict[str, Any]


class Display(Protocol):
    def event(self, message: str) -> None: ...
    def nodes(self, nodes: list[Node]) -> None: ...
    def close(self) -> None: ...


def node_events(before: dict[str, Node], after: list[Node]) -> list[str]:
    """What changed between two listings: nodes that joined, changed state or left."""
    now = {n["id"]: n for n in after}
    out = [f"node {i} joined (region {n.get('region', '?')}, {n.get('state', '?')})"
           for i, n in now.items() if i not in before]  # fmt: skip
    out += [f"node {i} is {n.get('state')}" for i, n in now.items()
            if i in before and before[i].get("state") != n.get("state")]  # fmt: skip
    out += [f"node {i} left" for i in before if i not in now]
    return out


class EventLines:
    """One timestamped line per event, flushed at once."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.known: dict[str, Node] = {}

    def event(self, message: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False, markup=False, soft_wrap=True)
        self.console.file.flush()

    def nodes(self, nodes: list[Node]) -> None:
        for message in node_events(self.known, nodes):
            self.event(message)
        self.known = {n["id"]: n for n in nodes}

    def close(self) -> None:
        pass


class LiveTable:
    """A table of the nodes, redrawn in place, with the last few events under it."""

    def __init__(self, console: Console, title: str) -> None:
        self.title = title
        self.listing: list[Node] = []
        self.known: dict[str, Node] = {}
        self.recent: deque[str] = deque(maxlen=6)
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self) -> Group:
        table = Table(expand=False)
        for column in ("NODE", "REGION", "STATE"):
            table.add_column(column)
        table.add_column("SANDBOXES", justify="right")
        for n in sorted(self.listing, key=lambda n: str(n["id"])):
            table.add_row(str(n["id"]), str(n.get("region", "-")), str(n.get("state", "-")),
                          str(n.get("sandboxes", 0)))  # fmt: skip
        return Group(Text(self.title, style="bold"), table, *(Text(line, style="dim") for line in self.recent))

    def event(self, message: str) -> None:
        self.recent.append(f"{time.strftime('%H:%M:%S')} {message}")
        self.live.update(self._render())

    def nodes(self, nodes: list[Node]) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.recent.extend(f"{stamp} {message}" for message in node_events(self.known, nodes))
        self.known = {n["id"]: n for n in nodes}
        self.listing = nodes
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()


def display(console: Console, title: str) -> Display:
    """The live table on a terminal, event lines otherwise."""
    return LiveTable(console, title) if console.is_terminal else EventLines(console)
