"""Named placement policies, all built from the same plugins (weights are configuration).

- `cloche`: region-aware bin-packing with live usage feedback, warm-pool and locality
  awareness, log2(n) sampling; meant to run with overcommit, hibernation-based
  preemption and autosized warm pools.
- `kubernetes`: like kube-scheduler's default scoring (NodeResourcesFit with
  LeastAllocated, plus BalancedAllocation), every node scored.
- `first-fit`: the first node (in a fixed order) that fits.
- `random`: a uniformly random feasible node.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import (
    LabelConstraint,
    NodeReady,
    RegionConstraint,
    ResourceFit,
    TaintToleration,
    UsageHeadroom,
)
from cloche.scheduler.pipeline import Scheduler
from cloche.scheduler.sampling import Sampler
from cloche.scheduler.scorers import (
    Balance,
    BinPack,
    LabelAffinity,
    Latency,
    LatencyMatrix,
    LiveUsage,
    Locality,
    Spread,
    TaintPreference,
    WarmPool,
)

POLICIES = ("random", "first-fit", "kubernetes", "cloche")

CLOCHE_WEIGHTS: dict[str, float] = {
    "latency": 4.0,
    "locality": 3.0,
    "warm_pool": 1.0,
    "binpack": 1.0,
    "balance": 1.0,
    "usage": 1.0,
    "affinity": 1.0,
    "taint_preference": 1.0,
}


def base_filters(heartbeat_timeout_s: float | None = None) -> list:  # type: ignore[type-arg]
    return [NodeReady(heartbeat_timeout_s), ResourceFit(), RegionConstraint(), LabelConstraint(), TaintToleration()]


def build(name: str, cluster: Cluster, *, weights: Mapping[str, float] | None = None,
          matrix: LatencyMatrix | None = None, high_water: float = 0.85, expected_usage: float = 0.25,
          sample: int | None = None, full_scan_below: int = 0, seed: int | None = None,
          heartbeat_timeout_s: float | None = None) -> Scheduler:  # fmt: skip
    filters = base_filters(heartbeat_timeout_s)
    if name == "random":
        return Scheduler(cluster, filters, sampler=Sampler(limit=len(cluster) or 1, region_first=False),
                         select="random", name=name, seed=seed)  # fmt: skip
    if name == "first-fit":
        return Scheduler(cluster, filters, sampler=Sampler(region_first=False, rotate=False), select="first",
                         name=name, seed=seed)  # fmt: skip
    if name == "kubernetes":
        scorers = [(Spread(), 1.0), (Balance(), 1.0)]
        return Scheduler(cluster, filters, scorers, Sampler(limit=1 << 30, region_first=False), name=name, seed=seed)
    if name == "cloche":
        w = {**CLOCHE_WEIGHTS, **(weights or {})}
        plugins = {"latency": Latency(matrix), "locality": Locality(), "warm_pool": WarmPool(), "binpack": BinPack(),
                   "spread": Spread(), "balance": Balance(), "usage": LiveUsage(), "affinity": LabelAffinity(),
                   "taint_preference": TaintPreference()}  # fmt: skip
        unknown = set(w) - set(plugins)
        if unknown:
            raise ValueError(f"unknown scorer(s) in weights: {sorted(unknown)}")
        scorers = [(plugins[k], v) for k, v in w.items()]
        filters.insert(2, UsageHeadroom(high_water, expected_usage))
        sampler = Sampler(limit=sample, full_scan_below=full_scan_below, region_first=w.get("latency", 0) > 0)
        return Scheduler(cluster, filters, scorers, sampler, name=name, seed=seed)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def parse_weights(spec: str) -> dict[str, float]:
    """`latency=4,binpack=1` -> {"latency": 4.0, "binpack": 1.0}."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, value = item.split("=")
        out[key.strip()] = float(value)
    return out
