"""The scheduler's view of the world: resources, nodes, and what a placement asks for.

Everything here is plain data with cheap arithmetic, because one placement decision
touches a few dozen nodes and must take tens of microseconds. A node's `allocatable`
is its capacity times the overcommit ratio of each dimension; `allocated` is the sum
of the requests placed on it; `usage` is what its sandboxes really use, read from
cgroups (live usage feedback).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

INF = math.inf
DIMENSIONS = ("cpu", "memory_mb", "disk_mb", "gpus")


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of each resource dimension. `INF` means unconstrained (unknown capacity)."""

    cpu: float = 0.0
    memory_mb: float = 0.0
    disk_mb: float = 0.0
    gpus: float = 0.0

    def __add__(self, o: Resources) -> Resources:
        return Resources(self.cpu + o.cpu, self.memory_mb + o.memory_mb, self.disk_mb + o.disk_mb,
                         self.gpus + o.gpus)  # fmt: skip

    def __sub__(self, o: Resources) -> Resources:
        return Resources(self.cpu - o.cpu, self.memory_mb - o.memory_mb, self.disk_mb - o.disk_mb,
                         self.gpus - o.gpus)  # fmt: skip

    def scaled(self, ratio: Overcommit) -> Resources:
        return Resources(self.cpu * ratio.cpu, self.memory_mb * ratio.memory_mb, self.disk_mb * ratio.disk_mb,
                         self.gpus)  # fmt: skip

    def fits_in(self, limit: Resources, eps: float = 1e-9) -> bool:
        return (self.cpu <= limit.cpu + eps and self.memory_mb <= limit.memory_mb + eps
                and self.disk_mb <= limit.disk_mb + eps and self.gpus <= limit.gpus + eps)  # fmt: skip

    def exceeded(self, limit: Resources, eps: float = 1e-9) -> list[str]:
        """The dimensions in which self is above limit."""
        return [d for d in DIMENSIONS if getattr(self, d) > getattr(limit, d) + eps]

    def to_json(self) -> dict[str, float | None]:
        return {d: (None if math.isinf(v := getattr(self, d)) else round(v, 4)) for d in DIMENSIONS}


ZERO = Resources()


@dataclass(frozen=True, slots=True)
class Overcommit:
    """Allocatable = capacity x ratio. One-to-one agents are mostly idle, so requests
    may add up to more than the machine; live usage keeps that honest. GPUs never
    overcommit."""

    cpu: float = 1.0
    memory_mb: float = 1.0
    disk_mb: float = 1.0


NO_OVERCOMMIT = Overcommit()


@dataclass(frozen=True, slots=True)
class Taint:
    """A node repels sandboxes that do not tolerate its taint. NoSchedule is a hard
    filter; PreferNoSchedule only lowers the node's score."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"  # or "PreferNoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    value: str | None = None  # None: any value
    effect: str | None = None  # None: any effect

    def tolerates(self, taint: Taint) -> bool:
        return (self.key == taint.key and (self.value is None or self.value == taint.value)
                and (self.effect is None or self.effect == taint.effect))  # fmt: skip


@dataclass(slots=True)
class Node:
    """One worker as the scheduler sees it. `local` holds the ids of sandboxes (and
    snapshot digests) whose writable layer the node keeps on its disk; `pools` the
    ready warm sandboxes per template."""

    id: str
    capacity: Resources
    labels: dict[str, str] = field(default_factory=dict)
    overcommit: Overcommit = NO_OVERCOMMIT
    taints: tuple[Taint, ...] = ()
    draining: bool = False
    ready: bool = True
    heartbeat_at: float = field(default_factory=time.time)
    allocated: Resources = ZERO
    usage: Resources = ZERO
    pools: dict[str, int] = field(default_factory=dict)
    local: set[str] = field(default_factory=set)
    allocatable: Resources = ZERO  # derived: capacity x overcommit (see refresh())

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.allocatable = self.capacity.scaled(self.overcommit)

    @property
    def region(self) -> str:
        return self.labels.get("region", "")

    @property
    def free(self) -> Resources:
        return self.allocatable - self.allocated

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "labels": dict(self.labels),
            "ready": self.ready,
            "draining": self.draining,
            "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in self.taints],
            "capacity": self.capacity.to_json(),
            "overcommit": {
                "cpu": self.overcommit.cpu,
                "memory_mb": self.overcommit.memory_mb,
                "disk_mb": self.overcommit.disk_mb,
            },  # fmt: skip
            "allocatable": self.allocatable.to_json(),
            "allocated": self.allocated.to_json(),
            "usage": self.usage.to_json(),
            "heartbeat_at": self.heartbeat_at,
        }


@dataclass(slots=True)
class Ask:
    """What one placement needs. `region` is the user's region (or client-location
    hint) for the latency scorer; `regions` restricts placement to those regions;
    `constraints` are labels the node must carry, `affinity` labels it should;
    `locality` names layers (sandbox ids, snapshot digests) this sandbox would reuse."""

    resources: Resources
    template: str = "base"
    tenant: str = ""
    priority: int = 0
    region: str | None = None
    regions: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    affinity: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    locality: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()
