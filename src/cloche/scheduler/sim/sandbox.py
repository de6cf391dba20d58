"""What a simulated world keeps per agent: its sandbox (`Box`) and, while it waits in the
admission loop's queue, its `SimWaiter`."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloche.scheduler.loop import Waiter
from cloche.scheduler.model import ZERO, Node, Resources
from cloche.scheduler.preemption import Victim
from cloche.scheduler.sim.workload import Agent


@dataclass(slots=True)
class Box:
    """One agent's sandbox."""

    agent: Agent
    request: Resources  # shared by every agent of that size
    state: str = "queued"  # queued, running, hibernating, hibernated, gone
    node: Node | None = None
    home: Node | None = None  # the node whose disk holds its layer
    active: bool = False
    last_active: float = 0.0
    turn: int = 0
    usage: Resources = ZERO
    rtt: float = 0.0  # to its node, from its user's region
    victim: Victim | None = None  # while idle on a node, once a preemption looked at it
    # constant per agent, computed once: its key, and its usage while active and while idle
    key: str = field(init=False)
    active_usage: Resources = field(init=False)
    idle_usage: Resources = field(init=False)

    def __post_init__(self) -> None:
        a = self.agent
        self.key = f"sb{a.id}"
        self.active_usage = Resources(a.cpu * a.active_frac, a.memory_mb * a.active_frac)
        self.idle_usage = Resources(a.cpu * 0.02, a.memory_mb * a.idle_frac)

    def as_victim(self) -> Victim:
        """The idle sandbox as a preemption victim (what it was when it went idle), made
        once per idle gap: most gaps end long before a preemption looks at them."""
        if self.victim is None:
            assert self.node is not None, "an idle sandbox is on a node"
            a = self.agent
            self.victim = Victim(self.key, self.node.id, self.request, a.priority, self.last_active,
                                 self.usage.memory_mb)  # fmt: skip
        return self.victim


@dataclass(eq=False, slots=True, kw_only=True)
class SimWaiter(Waiter):
    """The loop's waiter, with the agent's sandbox it creates or wakes."""

    box: Box
