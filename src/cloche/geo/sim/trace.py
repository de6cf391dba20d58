"""The geo workload: users living in regions, their sessions in local daytime, trips
that move a share of them to another region for days, and region outages. Generated
once per seed, then replayed unchanged under every policy, so policies differ only in
where they put the agents."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from cloche.geo.sim.regions import USERS

DAY_S = 86400.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class GeoConfig:
    users: int = 2000
    days: float = 7.0
    seed: int = 1
    sessions_per_day: float = 3.0  # Poisson; each session begins with a wake
    requests_per_session: float = 15.0  # mean (geometric)
    request_gap_s: float = 40.0  # mean gap between a session's requests (exponential)
    travel_per_day: float = 0.03  # chance a user at home leaves on a trip that day
    trip_days: float = 3.0  # median trip length (lognormal, 1 to 14 days)
    stray_share: float = 0.02  # sessions sent from a random other region (a VPN, a colleague): noise
    outages: int = 2  # whole-region outages over the run
    outage_hours: tuple[float, float] = (2.0, 8.0)
    access_ms: float = 15.0  # median round trip from a user to the nearest region's edge (lognormal)
    access_sigma: float = 0.6
    agent_mb: float = 100.0  # median agent size (lognormal)
    agent_sigma: float = 0.8
    base_share: float = 0.4  # of an agent's chunks (template layers) already in every region
    dirty_per_hour: float = 0.02  # of an agent's size rewritten per hour since it left a region
    copy_mb_s: float = 125.0  # inter-region copy bandwidth (1 Gbit/s); the waking request waits for it


@dataclass(frozen=True, slots=True)
class Request:
    t: float
    user: int
    region: str  # where the user is when sending it
    wake: bool  # the first request of a session: the agent wakes from hibernation


@dataclass(frozen=True)
class Outage:
    region: str
    start: float
    end: float


@dataclass(frozen=True)
class Trace:
    homes: list[str]  # per user
    sizes_mb: list[float]  # per user's agent
    access_ms: list[float]  # per user: the last mile, added to every request's round trip
    requests: list[Request]  # in time order
    outages: list[Outage]

    def away_share(self) -> float:
        """The share of requests sent by users away from home."""
        return sum(r.region != self.homes[r.user] for r in self.requests) / max(1, len(self.requests))

    def live(self, regions: tuple[str, ...], t: float) -> tuple[str, ...]:
        down = {o.region for o in self.outages if o.start <= t < o.end}
        return tuple(r for r in regions if r not in down)


def generate(cfg: GeoConfig, regions: tuple[str, ...]) -> Trace:
    rng = random.Random(cfg.seed)
    names = [r for r, _, _ in USERS]
    weights = [w for _, w, _ in USERS]
    offset = {r: tz for r, _, tz in USERS}
    homes = rng.choices(names, weights, k=cfg.users)
    sizes = [cfg.agent_mb * math.exp(rng.gauss(0.0, cfg.agent_sigma)) for _ in range(cfg.users)]
    access = [cfg.access_ms * math.exp(rng.gauss(0.0, cfg.access_sigma)) for _ in range(cfg.users)]
    requests: list[Request] = []
    for user, home in enumerate(homes):
        away_until, away_in = -1.0, home
        for day in range(math.ceil(cfg.days)):
            if day * DAY_S >= away_until and rng.random() < cfg.travel_per_day:
                length = min(14.0, max(1.0, rng.lognormvariate(math.log(cfg.trip_days), 0.6)))
                away_until = (day + length) * DAY_S
                away_in = rng.choices([r for r in names if r != home], [w for r, w in zip(names, weights, strict=True)
                                                                         if r != home])[0]  # fmt: skip
            for _ in range(_poisson(rng, cfg.sessions_per_day)):
                # local daytime (08:00 to 23:00) where the user is at the start of the day
                where = away_in if day * DAY_S < away_until else home
                local_h = rng.uniform(8.0, 23.0)
                t = day * DAY_S + ((local_h - offset[where]) % 24.0) * HOUR_S
                where = away_in if t < away_until else home
                if rng.random() < cfg.stray_share:
                    where = rng.choice([r for r in names if r != where])
                n = 1 + int(rng.expovariate(1.0 / max(cfg.requests_per_session - 1.0, 1e-9)))
                for i in range(n):
                    if t < cfg.days * DAY_S:
                        requests.append(Request(t, user, where, i == 0))
                    t += rng.expovariate(1.0 / cfg.request_gap_s)
    requests.sort(key=lambda r: (r.t, r.user))
    outages = []
    for _ in range(cfg.outages):
        start = rng.uniform(0.1, 0.9) * cfg.days * DAY_S
        outages.append(Outage(rng.choice(regions), start, start + rng.uniform(*cfg.outage_hours) * HOUR_S))
    return Trace(homes, sizes, access, requests, outages)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the handful of sessions a day."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
