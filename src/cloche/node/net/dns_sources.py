"""Per-source budgets of the node's DNS resolver: a token bucket and counters per
sandbox address, in a bounded table that forgets the stalest source first.

Why it exists: DNS is an exfiltration channel, so every source is rate limited and
counted (the counters are the sandbox's `dns_queries`, `dns_refused` and
`dns_rate_limited`); the bookkeeping is apart from answering queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_SOURCES = 65536


@dataclass
class Bucket:
    """A token bucket: `burst` queries at once, then `rate` per second."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Source:
    """Per source ip: its rate limit and its counters."""

    bucket: Bucket
    queries: int = 0
    refused: int = 0
    rate_limited: int = 0
    tcp_connections: int = 0


class Sources:
    """Source ip -> its state, at most MAX_SOURCES of them, most recently used last."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._sources: dict[str, Source] = {}

    def stats(self, source: str) -> dict[str, int]:
        """Counters for one source ip: every message, REFUSED answers (other than rate limiting), rate limited."""
        state = self._sources.get(source)
        if state is None:
            return {"queries": 0, "refused": 0, "rate_limited": 0}
        return {"queries": state.queries, "refused": state.refused, "rate_limited": state.rate_limited}

    def forget(self, source: str) -> None:
        """Drop a source's state (its sandbox went away; the ip may be reused with a fresh budget)."""
        self._sources.pop(source, None)

    def get(self, source: str) -> Source:
        state = self._sources.pop(source, None)
        if state is None:
            if len(self._sources) >= MAX_SOURCES:
                self._sources.pop(next(iter(self._sources)))
            bucket = Bucket(self._rate, float(self._burst), float(self._burst), time.monotonic())
            state = Source(bucket)
        self._sources[source] = state  # most recently used last, so eviction drops the stalest
        return state
