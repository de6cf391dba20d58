"""The regions' parts of a cluster replica, built from its settings: moving sandboxes
between regions, the leader's checkpoint replicas, agents following their user, and
their metrics.

Why it exists: `server/backends.py` composes a replica; what regions add to it is
composed here, so that module only plugs it in (the fleet's resume of a lost sandbox,
the leader's replication pass, the agents' follow hook and the metrics registry).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from cloche.config import Settings
from cloche.fleet.fleet import Fleet
from cloche.fleet.follow_user import Follower
from cloche.fleet.move import Mover
from cloche.fleet.replicate import Replicator
from cloche.fleet.sandbox_regions import SandboxRegions
from cloche.fleet.scoring import fleet_matrix
from cloche.geo.follow import FollowRule
from cloche.snapshots.regions import RegionStores
from cloche.store.db import Store


@dataclass
class Geo:
    mover: Mover
    replicator: Replicator
    follower: Follower


def build_geo(settings: Settings, fleet: Fleet, store: Store, registry: CollectorRegistry) -> Geo:
    stores = RegionStores(settings.blob_urls(), settings.blob_url)
    mover = Mover(fleet, stores, SandboxRegions(store), fleet_matrix(settings.latency_matrix))
    fleet.adopt_lost = mover.adopt_lost
    fleet.carry = mover.carry
    rule = FollowRule(window_s=settings.follow_window_s, min_requests=settings.follow_min_requests,
                      threshold=settings.follow_threshold, cooldown_s=settings.follow_cooldown_s)  # fmt: skip
    geo = Geo(mover, Replicator(mover), Follower(mover, rule))
    registry.register(GeoCollector(geo))
    return geo


class GeoCollector(Collector):
    """Moves between regions by this replica, and the bytes it copied between regions' stores."""

    def __init__(self, geo: Geo) -> None:
        self.geo = geo

    def collect(self) -> Iterator[CounterMetricFamily]:
        moves = CounterMetricFamily("cloche_region_moves", "Sandboxes moved to another region")
        moves.add_metric([], self.geo.mover.moves)
        copied = CounterMetricFamily("cloche_region_copied_bytes", "Snapshot bytes copied between regions' "
                                     "stores, by why: a move or a checkpoint replica", labels=["kind"])  # fmt: skip
        copied.add_metric(["move"], self.geo.mover.bytes_copied)
        copied.add_metric(["replica"], self.geo.replicator.bytes_copied)
        yield from (moves, copied)
