"""`cloche sim --geo`: agents and their travelling users over real cloud regions.

Users live in ten AWS regions (round-trip times from a published matrix), send
sessions of requests in their local daytime, and some travel for days; whole regions
go down for hours. The same trace is replayed under each placement policy (see
:mod:`cloche.geo.sim.replay`) and compared by user-perceived latency against the ideal
(always the nearest live region), migrations per user-day and bytes copied. The
follow decision is the fleet's own (:func:`cloche.geo.follow.follow_target`) and the
nearest region is ranked by the scheduler's own latency scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloche.geo.follow import FollowRule
from cloche.geo.sim.regions import USERS, GeoMap
from cloche.geo.sim.replay import IDEAL, POLICIES, Outcome, Replay
from cloche.geo.sim.trace import GeoConfig, Trace, generate

__all__ = ["IDEAL", "POLICIES", "GeoConfig", "GeoMap", "GeoRun", "Outcome", "simulate"]


@dataclass
class GeoRun:
    trace: Trace
    outcomes: list[Outcome]  # the policies in the order asked, then the ideal
    home: str


def simulate(cfg: GeoConfig, rule: FollowRule | None = None, policies: Sequence[str] = POLICIES,
             geo: GeoMap | None = None) -> GeoRun:  # fmt: skip
    """Every policy and the ideal over one trace generated from `cfg`."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    geo = geo or GeoMap.published()
    rule = rule or FollowRule()
    trace = generate(cfg, geo.regions)
    home = max(USERS, key=lambda u: u[1])[0]  # the most populous region
    outcomes = [Replay(p, trace, geo, cfg, rule, home).run() for p in [*policies, IDEAL]]
    return GeoRun(trace, outcomes, home)
