"""The cyclic garbage collector, paused while the simulator builds a workload or runs a
world: agents, events and sandboxes make no reference cycles, and the collector's
passes over the hundreds of thousands of them alive would cost a tenth of the run
(reference counting still frees everything as usual)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
