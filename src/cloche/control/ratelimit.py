"""Per-tenant token buckets: one tenant's flood never throttles another."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from cloche.control.errors import ApiError


@dataclass
class Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, Bucket] = {}

    def take(self, tenant_id: str) -> float:
        """Take one token; returns 0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(tenant_id, Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return max(0.001, (1 - bucket.tokens) / self.rate)

    def check(self, tenant_id: str) -> None:
        """Take one token, or refuse the request: 429 with the seconds to wait. Every
        API's requests go through here (cloche's, the dashboard's, E2B's and envd's)."""
        wait = self.take(tenant_id)
        if wait:
            raise ApiError(429, "rate_limited", "rate limit exceeded for this tenant; retry later",
                           {"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip
