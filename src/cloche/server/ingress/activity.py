"""Traffic through the ingress counts as activity for the sandbox's idle policy.

Both relays report every chunk or message here; the touch itself reaches control at
most once a second per exchange, so streaming stays cheap.
"""

from __future__ import annotations

import contextlib
import time

from cloche.control.ports import Ports
from cloche.node.errors import RuntimeFailure

TOUCH_EVERY_S = 1.0


class Activity:
    """Touches the sandbox (postponing its idle policy) at most once a second."""

    __slots__ = ("ports", "sandbox_id", "last")

    def __init__(self, ports: Ports, sandbox_id: str) -> None:
        self.ports = ports
        self.sandbox_id = sandbox_id
        self.last = time.monotonic()

    def seen(self) -> None:
        now = time.monotonic()
        if now - self.last >= TOUCH_EVERY_S:
            self.last = now
            with contextlib.suppress(RuntimeFailure):
                self.ports.touch(self.sandbox_id)
