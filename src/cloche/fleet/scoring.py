"""Latency-aware placement over a cluster's nodes: which live node a sandbox goes to.

Why it exists: an agent should run close to its user (a tool call from Frankfurt should
not cross the Atlantic), on a node with room, and never outside the regions its app is
pinned to (data residency). `pick` ranks the candidate nodes by the expected round trip
from the user's region to each node's region (`fleet_matrix`) plus the share of the
node's memory already taken; nodes without room for the sandbox go last, and a pinned
sandbox whose regions have no node with room is refused (`RegionFull`), never placed
elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cloche.scheduler.errors import NoCapacity, RegionFull
from cloche.scheduler.scorers.latency import LatencyMatrix

# A node's cost: its RTT from the user over the matrix's largest, times this, plus the
# share of its memory taken. At 2, the user's own region (a few ms) wins over an empty
# node an ocean away (80 ms of 220) until it is about 70% full.
LATENCY_WEIGHT = 2.0


@functools.lru_cache(maxsize=8)
def fleet_matrix(configured: str = "") -> LatencyMatrix:
    """The region-to-region round trips placement scores with: the configured matrix
    (Settings.latency_matrix, `us-eu=80,...`), else the built-in one."""
    return LatencyMatrix.parse(configured) if configured else LatencyMatrix()


@dataclass(frozen=True)
class Candidate:
    """A live node that passed the other filters (not draining, not avoided, its isolation)."""

    node_id: str
    region: str
    used_mb: float  # the memory limits of its running sandboxes, and of those being placed there
    capacity_mb: float

    def has_room(self, memory_mb: float) -> bool:
        return self.used_mb + memory_mb <= self.capacity_mb

    def cost(self, near: str | None, matrix: LatencyMatrix) -> float:
        taken = self.used_mb / self.capacity_mb if self.capacity_mb > 0 else 1.0
        if near is None:
            return taken
        return LATENCY_WEIGHT * matrix.rtt(near, self.region) / matrix.max_ms + taken


def pick(candidates: Sequence[Candidate], memory_mb: float, near: str | None, pinned: Collection[str],
         matrix: LatencyMatrix) -> Candidate:  # fmt: skip
    """The best node for a sandbox of `memory_mb` whose user is in `near` (None: anywhere).
    With `pinned` regions only nodes there qualify, and only with room (else RegionFull);
    an unpinned sandbox goes to a node with room when one has some, else to the least
    used (over-committing rather than failing, as a single machine does)."""
    allowed = [c for c in candidates if not pinned or c.region in pinned]
    roomy = [c for c in allowed if c.has_room(memory_mb)]
    if pinned and not roomy:
        raise RegionFull(f"no live node in region {', '.join(sorted(pinned))} has room for a {memory_mb:g} MB "
                         "sandbox, and its data must stay there (data residency)", retry_after_s=5)  # fmt: skip
    pool = roomy or allowed
    if not pool:
        raise NoCapacity("no live node can take the sandbox", retry_after_s=1)
    return min(pool, key=lambda c: c.cost(near, matrix))
