"""Warm pools sized automatically, per template and node.

A claim takes a ready sandbox; the node refills it by a cold create that takes W
seconds. With claims arriving at rate λ, Little's law gives λ·W sandboxes in refill
on average; sizing the pool to λ·W + z·sqrt(λ·W) (the Poisson mean plus z standard
deviations) keeps a ready sandbox for almost every claim. λ is an EWMA of the claim
rate (time-decayed, half-life `half_life_s`), W an EWMA of measured refill times.
Templates claimed less often than `cold_rate` (per second) keep no pool, and the
pools of one node share a memory budget: the hottest templates are served first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class PoolStats:
    rate: float = 0.0  # EWMA claims per second
    refill_s: float = 0.0  # EWMA seconds per refill (cold create)
    pending: int = 0  # claims since the last tick


class PoolSizer:
    def __init__(self, budget_mb: float, sandbox_mb: float = 32.0, half_life_s: float = 60.0, z: float = 2.0,
                 cold_rate: float = 1 / 600, default_refill_s: float = 0.25, max_size: int = 64,
                 floor: Mapping[str, int] | None = None) -> None:  # fmt: skip
        self.budget_mb = budget_mb
        self.sandbox_mb = sandbox_mb
        self.half_life_s = half_life_s
        self.z = z
        self.cold_rate = cold_rate
        self.default_refill_s = default_refill_s
        self.max_size = max_size
        self.floor = dict(floor or {})
        self.stats: dict[str, PoolStats] = {}
        self.last_tick: float | None = None
        self.targets: dict[str, int] = {}

    def claimed(self, template: str, n: int = 1) -> None:
        self.stats.setdefault(template, PoolStats()).pending += n

    def refilled(self, template: str, seconds: float) -> None:
        s = self.stats.setdefault(template, PoolStats())
        s.refill_s = seconds if s.refill_s == 0 else 0.8 * s.refill_s + 0.2 * seconds

    def tick(self, now: float) -> dict[str, int]:
        """Fold the claims since the last tick into the rates and return the targets."""
        if self.last_tick is None:
            self.last_tick = now
        dt = now - self.last_tick
        if dt > 0:
            alpha = 1.0 - math.exp(-dt * math.log(2) / self.half_life_s)
            for s in self.stats.values():
                s.rate = alpha * (s.pending / dt) + (1 - alpha) * s.rate
                s.pending = 0
            self.last_tick = now
        self.targets = self.sizes()
        return self.targets

    def want(self, template: str) -> int:
        """The unconstrained target for one template (Little's law plus headroom)."""
        s = self.stats.get(template)
        floor = self.floor.get(template, 0)
        if s is None or s.rate < self.cold_rate:
            return floor
        in_refill = s.rate * (s.refill_s or self.default_refill_s)
        return max(floor, min(self.max_size, max(1, math.ceil(in_refill + self.z * math.sqrt(in_refill)))))

    def sizes(self) -> dict[str, int]:
        """Targets for every known template within the memory budget, hottest first."""
        left = int(self.budget_mb // self.sandbox_mb) if self.sandbox_mb > 0 else self.max_size
        out: dict[str, int] = {}
        templates = set(self.stats) | set(self.floor)
        for t in sorted(templates, key=lambda t: -(self.stats[t].rate if t in self.stats else 0.0)):
            size = min(self.want(t), max(0, left))
            out[t] = size
            left -= size
        return out
