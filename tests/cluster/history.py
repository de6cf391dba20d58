"""A record of who served an agent instance when, and the check that matters: at no
moment did two holders of one key serve at once. Shared by every failover test."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class History:
    events: list[tuple[float, str, bool]] = field(default_factory=list)

    def record(self, holder: str, serving: bool) -> None:
        self.events.append((time.monotonic(), holder, serving))

    def overlaps(self) -> list[tuple[float, set[str]]]:
        """Every moment at which more than one holder was serving. At one instant starts
        come before ends: a holder seen at one moment only (a checkpoint holding one line
        of its heartbeat) starts and ends there, instead of ending before it starts and
        serving on forever."""
        serving: set[str] = set()
        bad = []
        for at, holder, on in sorted(self.events, key=lambda event: (event[0], not event[2])):
            (serving.add if on else serving.discard)(holder)
            if len(serving) > 1:
                bad.append((at, set(serving)))
        return bad

    def first(self, holder: str, serving: bool) -> float:
        return next(at for at, h, on in self.events if h == holder and on == serving)
