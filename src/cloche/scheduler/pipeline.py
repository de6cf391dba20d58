"""The placement pipeline: filters, then scorers, then a normalised weighted sum, then
selection (Nomad's iterator stack; the Kubernetes framework's Filter, Score,
NormalizeScore and Reserve extension points).

    nodes ──▶ Sampler ──▶ Filter* ──▶ (limit feasible) ──▶ Scorer* x weight ──▶ Σ/Σw ──▶ select ──▶ reserve

`place` decides without side effects; `reserve` commits the decision to the cluster
state so the next decision sees it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import Filter
from cloche.scheduler.model import Ask, Node
from cloche.scheduler.sampling import Sampler
from cloche.scheduler.scorers import Scorer


@dataclass
class Placement:
    """A decision and why it was made."""

    node: Node | None
    policy: str = ""
    score: float = 0.0
    raw: dict[str, float] = field(default_factory=dict)  # the chosen node's score per scorer, in [0, 1]
    weights: dict[str, float] = field(default_factory=dict)
    examined: int = 0
    feasible: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    cluster_size: int = 0
    limit: int = 0
    runner_up: float | None = None
    victims: list[str] = field(default_factory=list)  # sandboxes hibernated to make room
    waited_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.node is not None

    @property
    def breakdown(self) -> dict[str, dict[str, float]]:
        total = sum(self.weights.values()) or 1.0
        return {k: {"raw": v, "weight": self.weights[k], "weighted": self.weights[k] * v / total}
                for k, v in self.raw.items()}  # fmt: skip

    def reason(self) -> str:
        if self.node is None:
            why = ", ".join(f"{k} x{v}" for k, v in sorted(self.rejected.items(), key=lambda kv: -kv[1]))
            return f"no feasible node among {self.examined} examined ({why or 'no nodes'})"
        top = sorted(self.breakdown.items(), key=lambda kv: -kv[1]["weighted"])[:3]
        factors = ", ".join(f"{k} {v['raw']:.2f} (weight {v['weight']:g})" for k, v in top)
        text = f"node {self.node.id}: "
        if self.feasible == 1:
            text += "the only feasible node"
        else:
            text += f"highest score {self.score:.3f} of {self.feasible} feasible candidates"
            if self.runner_up is not None:
                text += f" (runner-up {self.runner_up:.3f})"
        text += f"; examined {self.examined} of {self.cluster_size} nodes"
        if self.rejected:
            text += ", rejected " + ", ".join(f"{k} x{v}" for k, v in sorted(self.rejected.items()))
        if factors:
            text += f"; top factors: {factors}"
        if self.victims:
            text += f"; made room by hibernating {len(self.victims)} idle sandbox(es): {', '.join(self.victims)}"
        if self.waited_s > 0.001:
            text += f"; waited {self.waited_s:.2f} s in the admission queue"
        return text

    def explain(self) -> dict[str, Any]:
        return {
            "node": self.node.id if self.node else None,
            "policy": self.policy,
            "score": round(self.score, 4),
            "reason": self.reason(),
            "scores": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in self.breakdown.items()},
            "examined": self.examined,
            "feasible": self.feasible,
            "cluster_size": self.cluster_size,
            "rejected": dict(self.rejected),
            "preempted": list(self.victims),
            "waited_s": round(self.waited_s, 3),
        }


class Scheduler:
    """One placement policy over one cluster. select: "max" (weighted score), "first"
    (first feasible in scan order) or "random" (uniform among the feasible sample)."""

    def __init__(self, cluster: Cluster, filters: Sequence[Filter],
                 scorers: Sequence[tuple[Scorer, float]] = (), sampler: Sampler | None = None,
                 select: str = "max", name: str = "custom", seed: int | None = None) -> None:  # fmt: skip
        if select not in ("max", "first", "random"):
            raise ValueError(f"unknown selection {select!r}")
        self.cluster = cluster
        self.filters = list(filters)
        self.scorers = [(s, float(w)) for s, w in scorers if w > 0]
        self.total_weight = sum(w for _, w in self.scorers) or 1.0
        self._neutral = [getattr(s, "neutral", None) for s, _ in self.scorers]
        self._weights = {s.name: w for s, w in self.scorers}
        self.sampler = sampler or Sampler()
        self.select = select
        self.name = name
        self.rng = random.Random(seed)

    def infeasible(self, node: Node, ask: Ask) -> str | None:
        """None when every filter passes, else '<filter>: <reason>'."""
        for f in self.filters:
            reason = f.check(node, ask)
            if reason is not None:
                return f"{f.name}: {reason}"
        return None

    def feasible(self, node: Node, ask: Ask) -> bool:
        """Whether every filter passes (infeasible without the reason)."""
        return self.infeasible(node, ask) is None

    def place(self, ask: Ask) -> Placement:
        cluster = self.cluster
        n = len(cluster.nodes)
        limit = 1 if self.select == "first" else self.sampler.limit(n)
        feasible: list[Node] = []
        rejected: dict[str, int] = {}
        examined = 0
        filters = self.filters
        for node in self.sampler.scan(cluster, ask):
            examined += 1
            for f in filters:
                reason = f.check(node, ask)
                if reason is not None:
                    key = f"{f.name}: {reason}"
                    rejected[key] = rejected.get(key, 0) + 1
                    break
            else:
                feasible.append(node)
                if len(feasible) >= limit:
                    break
        p = Placement(None, self.name, examined=examined, feasible=len(feasible), rejected=rejected,
                      cluster_size=n, limit=limit)  # fmt: skip
        if not feasible:
            return p
        if self.select == "first" or len(feasible) == 1:
            p.node = feasible[0]
        elif self.select == "random":
            p.node = self.rng.choice(feasible)
        else:
            self._score(feasible, ask, p)
            return p
        self._fill(p.node, ask, p)
        return p

    def _score(self, feasible: list[Node], ask: Ask, p: Placement) -> None:
        m = len(feasible)
        totals = [0.0] * m
        columns: list[list[float] | float] = []
        constant = 0.0
        for (scorer, weight), neutral in zip(self.scorers, self._neutral, strict=True):
            value = neutral(ask) if neutral is not None else None
            if value is not None:  # the same for every node: it cannot change the choice
                columns.append(value)
                constant += weight * value
                continue
            score = scorer.score
            raw = [score(node, ask) for node in feasible]
            if scorer.normalize:
                top = max(raw)
                raw = [r / top if top > 0 else 0.0 for r in raw]
            for i in range(m):
                totals[i] += weight * raw[i]
            columns.append(raw)
        best_i, best, second = 0, totals[0], None
        for i in range(1, m):
            t = totals[i]
            if t > best:
                second, best_i, best = best, i, t
            elif second is None or t > second:
                second = t
        p.node = feasible[best_i]
        p.score = (best + constant) / self.total_weight
        p.runner_up = (second + constant) / self.total_weight if second is not None else None
        p.raw = {s.name: (c if isinstance(c, float) else c[best_i]) for (s, _), c in zip(self.scorers, columns,
                                                                                       strict=True)}  # fmt: skip
        p.weights = self._weights

    def _fill(self, node: Node, ask: Ask, p: Placement) -> None:
        p.raw = {s.name: s.score(node, ask) for s, _ in self.scorers}
        p.weights = self._weights
        p.score = sum(w * p.raw[s.name] for s, w in self.scorers) / self.total_weight

    def reserve(self, placement: Placement, key: str, ask: Ask) -> None:
        if placement.node is None:
            raise ValueError("cannot reserve a failed placement")
        self.cluster.reserve(placement.node, key, ask.resources)

    def schedule(self, ask: Ask, key: str) -> Placement:
        """place + reserve."""
        p = self.place(ask)
        if p.node is not None:
            self.cluster.reserve(p.node, key, ask.resources)
        return p
