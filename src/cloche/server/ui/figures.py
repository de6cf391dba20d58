"""Live figures of a sandbox for the dashboard's list: CPU, memory, disk, network.

Why here and not in the API: these are read straight from the node (cgroups, the disk
image's allocated blocks, the firewall's counters) each time the list refreshes, and CPU is
a rate, so the sampler remembers the previous reading of each sandbox between refreshes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from cloche.node.net.firewall import Counters
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime

ACTIVE = ("running", "paused")


@dataclass
class Figures:
    cpu_pct: float | None = None  # of one core, since the previous reading
    memory_bytes: int | None = None
    disk_bytes: int | None = None  # blocks the sparse disk image really holds
    bytes_in: int | None = None
    bytes_out: int | None = None


class Sampler:
    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def figures(self, runtime: NodeRuntime, rec: SandboxRecord, counters: dict[str, Counters]) -> Figures:
        out = Figures()
        try:
            out.disk_bytes = os.stat(runtime.records.dir(rec.id) / "disk.img").st_blocks * 512
        except OSError:
            pass
        if net := counters.get(rec.id):
            out.bytes_in, out.bytes_out = net.bytes_in, net.bytes_out
        if rec.state not in ACTIVE:
            self._last.pop(rec.id, None)
            return out
        usage = runtime.usage(rec.id)
        out.memory_bytes = usage.memory_bytes
        now = time.monotonic()
        last = self._last.get(rec.id)
        if last is not None and now > last[0]:
            out.cpu_pct = max(0.0, (usage.cpu_usec - last[1]) / ((now - last[0]) * 1e6) * 100)
        self._last[rec.id] = (now, usage.cpu_usec)
        return out

    def forget(self, live: set[str]) -> None:
        for sid in set(self._last) - live:
            del self._last[sid]
