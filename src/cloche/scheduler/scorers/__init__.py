"""Scorers: each rates a feasible node in [0, 1] for one concern (higher is better).

The pipeline multiplies each score by the scorer's weight (configuration), adds them
up and divides by the sum of weights, so the final score is in [0, 1] too. A scorer
whose raw values are only meaningful relative to the other candidates sets
`normalize = True`, and the pipeline divides its scores by their maximum (the
Kubernetes framework's NormalizeScore). A scorer may also define `neutral(ask)`,
returning the score every node would get for this ask (a locality scorer when the ask
names no layer), so the pipeline need not call it per node.
"""

from __future__ import annotations

from typing import Protocol

from cloche.scheduler.model import Ask, Node


class Scorer(Protocol):
    name: str
    normalize: bool

    def score(self, node: Node, ask: Ask) -> float: ...


from cloche.scheduler.scorers.affinity import LabelAffinity, TaintPreference  # noqa: E402
from cloche.scheduler.scorers.balance import Balance  # noqa: E402
from cloche.scheduler.scorers.binpack import BinPack, Spread  # noqa: E402
from cloche.scheduler.scorers.latency import Latency, LatencyMatrix  # noqa: E402
from cloche.scheduler.scorers.locality import Locality  # noqa: E402
from cloche.scheduler.scorers.usage import LiveUsage  # noqa: E402
from cloche.scheduler.scorers.warmpool import WarmPool  # noqa: E402

__all__ = ["Balance", "BinPack", "LabelAffinity", "Latency", "LatencyMatrix", "LiveUsage", "Locality", "Scorer",
           "Spread", "TaintPreference", "WarmPool"]  # fmt: skip
