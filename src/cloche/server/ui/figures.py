"""Live figures of a sandbox for the dashboard's list: CPU, memory, disk, network.

Why here and not in the API: these are read straight from the node (cgroups, the disk
image's allocated blocks, the firewall's counters) each time the list refreshes. CPU is a
rate: it is the scheduler's own reading of each cgroup, taken every second
(`NodeView.usage`), so nothing is remembered here between refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloche.control.nodes import ACTIVE, NodeStatus
from cloche.node.net.firewall import Counters
from cloche.node.records import SandboxRecord


@dataclass
class Figures:
    cpu_pct: float | None = None  # of one core, since the previous reading
    memory_bytes: int | None = None
    disk_bytes: int | None = None  # blocks the sparse disk image really holds
    bytes_in: int | None = None
    bytes_out: int | None = None


def figures(nodes: NodeStatus, rec: SandboxRecord, counters: dict[str, Counters],
            cpu: dict[str, tuple[float, float]] | None) -> Figures:  # fmt: skip
    """`cpu` is the scheduler's sample (cores, memory) by sandbox id; None without a scheduler."""
    out = Figures()
    out.disk_bytes = nodes.disk_usage(rec.id).image_bytes or None
    if net := counters.get(rec.id):
        out.bytes_in, out.bytes_out = net.bytes_in, net.bytes_out
    if rec.state not in ACTIVE:
        return out
    out.memory_bytes = nodes.usage(rec.id).memory_bytes
    if cpu is not None:
        out.cpu_pct = cpu.get(rec.id, (0.0, 0.0))[0] * 100
    return out
