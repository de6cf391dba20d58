"""One policy replayed over a geo trace: where each agent lives, request by request.

Every policy sees the same requests and outages. An agent is placed on its user's
first request, may move only when it wakes from hibernation (the first request of a
session), and is resumed elsewhere at once when its region is down (a failover; it
returns to its chosen region on a later wake once that is back: a failback). Policies:

- `cloche`: latency-aware placement (the nearest live region to the user, ranked by
  the scheduler's latency scorer) and follow-the-user (`cloche.geo.follow.follow_target`);
- `home-region`: every agent in one region (a single-region deployment; outages fail
  over to the live region nearest to it);
- `nearest-static`: the nearest region at first placement, never migrated;
- `ideal`: the reference, every request served from the nearest live region, free.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from cloche.geo.follow import FollowRule, RegionHistory, follow_target
from cloche.geo.sim.regions import GeoMap
from cloche.geo.sim.trace import GeoConfig, Request, Trace

CLOCHE, HOME, STATIC, IDEAL = "cloche", "home-region", "nearest-static", "ideal"
POLICIES = (CLOCHE, HOME, STATIC)


@dataclass
class Outcome:
    """What one policy's replay counted."""

    policy: str
    latencies_ms: list[float] = field(default_factory=list)  # per request, user-perceived
    follows: int = 0
    failovers: int = 0
    failbacks: int = 0
    copied_mb: float = 0.0
    placements: list[tuple[float, str]] = field(default_factory=list)  # (when, region) of every placement or move

    @property
    def migrations(self) -> int:
        return self.follows + self.failovers + self.failbacks


@dataclass(slots=True)
class _Agent:
    region: str
    chosen: str  # where the policy wants it (differs from region after a failover)
    size_mb: float
    history: RegionHistory
    left_at: dict[str, float] = field(default_factory=dict)  # when it last left a region (its chunks stay)
    last_move_at: float | None = None


class _Live:
    """The live regions at a time: the outage timeline cut into intervals once."""

    def __init__(self, trace: Trace, regions: tuple[str, ...]) -> None:
        self.cuts = sorted({t for o in trace.outages for t in (o.start, o.end)})
        self.sets = [frozenset(trace.live(regions, t)) for t in [float("-inf"), *self.cuts]]

    def at(self, t: float) -> frozenset[str]:
        return self.sets[bisect.bisect_right(self.cuts, t)]


class Replay:
    def __init__(self, policy: str, trace: Trace, geo: GeoMap, cfg: GeoConfig, rule: FollowRule, home: str) -> None:
        self.policy, self.trace, self.geo, self.cfg, self.rule, self.home = policy, trace, geo, cfg, rule, home
        self.live = _Live(trace, geo.regions)
        self.out = Outcome(policy)
        self.agents: dict[int, _Agent] = {}

    def run(self) -> Outcome:
        for req in self.trace.requests:
            live = self.live.at(req.t)
            if self.policy == IDEAL:
                region, copy_ms = self.geo.nearest(req.region, live), 0.0
            else:
                copy_ms, agent = self._serve(req, live)
                region = agent.region
            self.out.latencies_ms.append(self.trace.access_ms[req.user] + self.geo.rtt(req.region, region) + copy_ms)
        return self.out

    def _anchor(self, req: Request) -> str:
        """The region whose nearest live region the policy places (or fails over) to."""
        return self.home if self.policy == HOME else req.region

    def _serve(self, req: Request, live: frozenset[str]) -> tuple[float, _Agent]:
        agent = self.agents.get(req.user)
        if agent is None:
            region = self.geo.nearest(self._anchor(req), live)
            agent = self.agents[req.user] = _Agent(region, region, self.trace.sizes_mb[req.user], RegionHistory())
            self.out.placements.append((req.t, region))
        if self.policy == CLOCHE:
            agent.history.note(req.region, req.t)
        if agent.region not in live:
            self.out.failovers += 1
            return self._move(agent, self.geo.nearest(self._anchor(req), live), req.t), agent
        if not req.wake:
            return 0.0, agent
        followed = False
        if self.policy == CLOCHE:  # decided from where the agent belongs, even while failed over
            target = follow_target(agent.history, agent.chosen, self.rule, req.t, agent.last_move_at, live)
            if target is not None:
                agent.chosen, agent.last_move_at, followed = target, req.t, True
        if agent.chosen == agent.region or agent.chosen not in live:
            return 0.0, agent
        if followed:
            self.out.follows += 1
        else:
            self.out.failbacks += 1
        return self._move(agent, agent.chosen, req.t), agent

    def _move(self, agent: _Agent, to: str, t: float) -> float:
        """Move the agent, copying only the chunks `to` lacks; the ms the waking request waits."""
        cfg = self.cfg
        cold = 1.0 - cfg.base_share
        stale = cold if to not in agent.left_at else min(cold, cfg.dirty_per_hour * (t - agent.left_at[to]) / 3600)
        missing = agent.size_mb * stale
        agent.left_at[agent.region] = t
        agent.region = to
        self.out.copied_mb += missing
        self.out.placements.append((t, to))
        return 1000.0 * missing / cfg.copy_mb_s
