"""The simulated world map: real cloud regions with a published round-trip-time matrix
(loaded into the scheduler's own `LatencyMatrix`), where users live, their time zones,
and "the nearest live region" as the scheduler's real `Latency` scorer ranks it."""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from cloche.scheduler.model import Ask, Node, Resources
from cloche.scheduler.scorers.latency import Latency, LatencyMatrix

MATRIX_FILE = "aws_rtt_2017.csv"
SAME_REGION_MS = 1.0  # the source's diagonal is 0; see the data file

# (region, share of users, UTC offset in hours): an assumption, not data. Users follow
# rough cloud-usage weights; offsets are the region's city.
USERS: tuple[tuple[str, float, float], ...] = (
    ("us-east-1", 0.22, -5), ("us-west-1", 0.06, -8), ("us-west-2", 0.10, -8),
    ("eu-west-1", 0.14, 0), ("eu-central-1", 0.14, 1), ("ap-northeast-1", 0.09, 9),
    ("ap-northeast-2", 0.05, 9), ("ap-southeast-1", 0.08, 8), ("ap-southeast-2", 0.05, 10),
    ("sa-east-1", 0.07, -3),
)  # fmt: skip


def load_matrix() -> tuple[tuple[str, ...], LatencyMatrix]:
    """The regions and their round-trip times from the data file (both directions averaged)."""
    text = resources.files("cloche.geo").joinpath("data", MATRIX_FILE).read_text()
    rows = list(csv.reader(line for line in text.splitlines() if line and not line.startswith("#")))
    regions = tuple(rows[0][1:])
    seen: dict[tuple[str, str], list[float]] = {}
    for row in rows[1:]:
        for to, cell in zip(regions, row[1:], strict=True):
            if row[0] != to:
                seen.setdefault(tuple(sorted((row[0], to))), []).append(float(cell))  # type: ignore[arg-type]
    rtt = {pair: sum(ms) / len(ms) for pair, ms in seen.items()}
    rtt.update({(r, r): SAME_REGION_MS for r in regions})
    return regions, LatencyMatrix(rtt)


@dataclass(frozen=True)
class GeoMap:
    regions: tuple[str, ...]
    matrix: LatencyMatrix

    @classmethod
    def published(cls) -> GeoMap:
        return cls(*load_matrix())

    def rtt(self, a: str, b: str) -> float:
        return self.matrix.rtt(a, b)

    def nearest(self, user: str, live: Iterable[str]) -> str:
        """The live region the scheduler's latency scorer ranks best for a user in `user`."""
        return _nearest(self, user, frozenset(live))


@functools.lru_cache(maxsize=4096)
def _nearest(geo: GeoMap, user: str, live: frozenset[str]) -> str:
    scorer, ask = Latency(geo.matrix), Ask(Resources(1, 1), region=user)
    nodes = [Node(region, Resources(1, 1), {"region": region}) for region in sorted(live)]
    return max(nodes, key=lambda n: scorer.score(n, ask)).id
