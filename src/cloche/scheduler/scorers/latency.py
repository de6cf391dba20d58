"""User-to-region latency: place the agent close to its user. Round-trip times come
from a configurable matrix (region -> region -> ms); the ask's `region` is the user's
region or the client-location hint of the request."""

from __future__ import annotations

from collections.abc import Mapping

from cloche.scheduler.model import Ask, Node

DEFAULT_RTT_MS = {
    ("us", "us"): 4.0, ("eu", "eu"): 4.0, ("ap", "ap"): 4.0,
    ("us", "eu"): 80.0, ("us", "ap"): 160.0, ("eu", "ap"): 220.0,
}  # fmt: skip


class LatencyMatrix:
    """Symmetric region-to-region round-trip times in ms; unknown pairs cost `unknown_ms`."""

    def __init__(self, rtt_ms: Mapping[tuple[str, str], float] | None = None, unknown_ms: float = 100.0) -> None:
        self.unknown_ms = unknown_ms
        self._rtt: dict[tuple[str, str], float] = {}
        for (a, b), ms in (rtt_ms if rtt_ms is not None else DEFAULT_RTT_MS).items():
            self._rtt[(a, b)] = self._rtt[(b, a)] = float(ms)
        self.max_ms = max([unknown_ms, *self._rtt.values()])

    @property
    def regions(self) -> set[str]:
        return {a for a, _ in self._rtt}

    def pairs(self) -> dict[tuple[str, str], float]:
        """Every known pair once, (a, b) with a <= b, and its round trip in ms."""
        return {(a, b): ms for (a, b), ms in self._rtt.items() if a <= b}

    def rtt(self, a: str | None, b: str | None) -> float:
        if a is None or b is None:
            return self.unknown_ms
        if a == b:
            return self._rtt.get((a, b), 1.0)
        return self._rtt.get((a, b), self.unknown_ms)

    @classmethod
    def parse(cls, spec: str) -> LatencyMatrix:
        """From `us-eu=80,us-ap=160,us-us=4` (ms)."""
        rtt = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            pair, ms = item.split("=")
            a, b = pair.split("-")
            rtt[(a.strip(), b.strip())] = float(ms)
        return cls(rtt)


class Latency:
    name = "latency"
    normalize = False

    def __init__(self, matrix: LatencyMatrix | None = None) -> None:
        self.matrix = matrix or LatencyMatrix()

    def neutral(self, ask: Ask) -> float | None:
        return 1.0 if ask.region is None else None

    def score(self, node: Node, ask: Ask) -> float:
        if ask.region is None:
            return 1.0
        return 1.0 - self.matrix.rtt(ask.region, node.labels.get("region")) / self.matrix.max_ms
