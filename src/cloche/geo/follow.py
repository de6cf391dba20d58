"""Follow-the-user: decide whether an agent should move to the region its requests now
come from. Pure (no I/O, no clock) so the fleet's wake path and the geo simulator run
the very same decision; the fleet persists a `RegionHistory` per agent as JSON.

Memory is bounded: the history keeps request counts per time bucket, never single
requests, and forgets buckets older than `max_buckets`. Flapping is bounded by the
rule's cooldown (at most one move per `cooldown_s`) and by a threshold above one half
(a user split evenly between two regions never moves at all)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FollowRule:
    """When to follow. The defaults are tuned by `cloche sim --geo` (see docs/regions.md):
    agents wake at the start of a session, hours after the last one, so only a short
    window ending at the waking request tells where the user is now; waiting for more
    evidence leaves a trip's first sessions (and one-off sessions from elsewhere) served
    from across the world, which is the p99. The cooldown bounds the cost: at most one
    move per ten minutes, and an evenly split user never moves at all."""

    window_s: float = 300.0  # only requests this recent count
    min_requests: int = 1  # fewer than this in the window: never move
    threshold: float = 0.7  # share of the window's requests from one other region needed to move
    cooldown_s: float = 600.0  # hysteresis: no second move within this of the last one

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.window_s <= 0 or self.cooldown_s < 0 or self.min_requests < 0:
            raise ValueError("window_s must be positive; cooldown_s and min_requests not negative")


class RegionHistory:
    """One agent's recent request regions: counts per `bucket_s` bucket, at most
    `max_buckets` buckets (the newest ones), so memory does not grow with traffic."""

    def __init__(self, bucket_s: float = 300.0, max_buckets: int = 288) -> None:
        if bucket_s <= 0 or max_buckets < 1:
            raise ValueError("bucket_s must be positive and max_buckets at least 1")
        self.bucket_s = bucket_s
        self.max_buckets = max_buckets
        self._buckets: dict[int, Counter[str]] = {}

    def _index(self, at: float) -> int:
        return math.floor(at / self.bucket_s)

    def note(self, region: str, at: float) -> None:
        """Count one request from `region` at time `at`; too old to keep: ignored."""
        idx = self._index(at)
        newest = max(self._buckets, default=idx)
        if idx <= newest - self.max_buckets:
            return
        self._buckets.setdefault(idx, Counter())[region] += 1
        for old in [i for i in self._buckets if i <= max(newest, idx) - self.max_buckets]:
            del self._buckets[old]

    def counts(self, now: float, window_s: float) -> Counter[str]:
        """Requests per region in the buckets overlapping (now - window_s, now]."""
        first, last = self._index(now - window_s), self._index(now)
        total: Counter[str] = Counter()
        for idx, bucket in self._buckets.items():
            if first <= idx <= last:
                total.update(bucket)
        return total

    def shares(self, now: float, window_s: float) -> dict[str, float]:
        """Each region's share of the window's requests (empty when there were none)."""
        counts = self.counts(now, window_s)
        total = sum(counts.values())
        return {region: n / total for region, n in counts.items()} if total else {}

    def bucket_count(self) -> int:
        return len(self._buckets)

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket_s": self.bucket_s,
            "max_buckets": self.max_buckets,
            "buckets": [[idx, dict(bucket)] for idx, bucket in sorted(self._buckets.items())],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RegionHistory:
        history = cls(float(d["bucket_s"]), int(d["max_buckets"]))
        for idx, bucket in d["buckets"]:
            history._buckets[int(idx)] = Counter({str(r): int(n) for r, n in bucket.items()})
        return history


def follow_target(
    history: RegionHistory,
    current: str,
    rule: FollowRule,
    now: float,
    last_move_at: float | None,
    allowed: Collection[str] | None = None,
) -> str | None:
    """The region the agent should move to on its next wake, or None to stay."""
    if last_move_at is not None and now - last_move_at < rule.cooldown_s:
        return None
    counts = history.counts(now, rule.window_s)
    total = sum(counts.values())
    if total < max(rule.min_requests, 1):
        return None
    best = min(
        (r for r in counts if r != current and (allowed is None or r in allowed)),
        key=lambda r: (-counts[r], r),
        default=None,
    )
    if best is None or counts[best] / total < rule.threshold:
        return None
    return best
