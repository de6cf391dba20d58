"""Which nodes a decision looks at, and in what order.

Scoring every node of a large cluster is wasted work: the best of a few random
feasible nodes is almost as good as the best of all (the power of d choices), and
Nomad scores only log2(n) of them. The scan order is:

1. preferred nodes: those that already hold a layer the ask would reuse (locality),
   so a sample never misses the node that has the sandbox's disk;
2. nodes of the user's region, from a rotating start (when the policy cares about
   latency), so nearby nodes are considered first;
3. every other node, from a rotating start.

The scan stops once `limit` feasible nodes are found. The rotating start (as in
Kubernetes' nextStartNodeIndex) makes consecutive decisions look at different nodes
without paying for a shuffle per decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from cloche.scheduler.cluster import Cluster
from cloche.scheduler.model import Ask, Node


class Sampler:
    def __init__(self, limit: int | None = None, min_candidates: int = 2, full_scan_below: int = 0,
                 region_first: bool = True, rotate: bool = True) -> None:  # fmt: skip
        """limit None: ceil(log2 n) feasible candidates (at least min_candidates);
        clusters of at most `full_scan_below` nodes are scanned whole; rotate False
        scans in node order from the first node every time (first-fit)."""
        self.fixed = limit
        self.min_candidates = min_candidates
        self.full_scan_below = full_scan_below
        self.region_first = region_first
        self.rotate = rotate
        self._offsets: dict[str, int] = {}

    def limit(self, n: int) -> int:
        if n <= self.full_scan_below:
            return n
        if self.fixed is not None:
            return min(n, self.fixed)
        return min(n, max(self.min_candidates, math.ceil(math.log2(max(n, 2)))))

    def _rotation(self, key: str, nodes: list[Node]) -> Iterator[Node]:
        n = len(nodes)
        if not n:
            return
        if not self.rotate:
            yield from nodes
            return
        offsets = self._offsets
        start = offsets.get(key, 0) % n
        for i in range(start, start + n):
            offsets[key] = i + 1
            yield nodes[i % n]

    def scan(self, cluster: Cluster, ask: Ask) -> Iterator[Node]:
        seen: set[str] = set()
        for item in ask.locality:
            for node_id in cluster.holders.get(item, ()):
                if node_id not in seen and node_id in cluster.by_id:
                    seen.add(node_id)
                    yield cluster.by_id[node_id]
        region = ask.region if self.region_first else None
        if region is not None and region in cluster.by_region:
            for node in self._rotation("r:" + region, cluster.by_region[region]):
                if node.id not in seen:
                    yield node
        for node in self._rotation("*", cluster.nodes):
            if node.id in seen or (region is not None and node.labels.get("region") == region):
                continue
            yield node
