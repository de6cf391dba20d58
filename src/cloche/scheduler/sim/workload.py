"""The simulated workload: per region, Poisson arrivals whose rate follows a diurnal
cycle (regions offset in phase like time zones); each agent has a request size from a
small heavy-tailed mix, a number of turns (active bursts, lognormal) separated by idle
gaps (Pareto, heavy-tailed), then a keep-alive idle period before it is killed. A trace
file (JSON lines, one agent per line, the fields of `Agent`) replaces it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cloche.scheduler.model import Resources
from cloche.scheduler.sim.nogc import paused_gc

DAY_S = 86400.0
SIZES = ((0.6, 0.25, 512), (0.3, 0.5, 1024), (0.1, 1.0, 4096))  # (share, cpu, memory_mb)
TEMPLATES = (("python", 0.7), ("node", 0.25), ("browser", 0.05))
MIN_SIZE = Resources(min(c for _, c, _ in SIZES), min(m for _, _, m in SIZES))


@dataclass
class SimConfig:
    nodes: int = 24
    regions: tuple[str, ...] = ("us", "eu", "ap")
    node_cpu: float = 16.0
    node_memory_mb: float = 64 * 1024
    hours: float = 12.0
    load: float = 1.6  # offered concurrency / the cluster's capacity without overcommit
    tenants: int = 12
    premium_share: float = 0.1  # share of agents from the one priority-1 tenant
    wait_s: float = 30.0
    keepalive_s: float = 600.0
    mean_turns: float = 6.0
    diurnal: float = 0.5  # amplitude of the daily cycle
    seed: int = 1
    # latencies not measured by the simulator (ms)
    cold_ms: float = 150.0
    warm_ms: float = 5.0
    wake_local_ms: float = 300.0
    wake_remote_ms: float = 900.0
    hibernate_ms: float = 400.0
    # cloche's knobs
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 2.0
    high_water: float = 0.85
    preempt_idle_s: float = 120.0
    pool_budget_mb: float = 1024.0
    static_pool: int = 2
    tick_s: float = 10.0


@dataclass
class Agent:
    id: int
    t: float
    region: str
    tenant: str
    priority: int
    template: str
    cpu: float
    memory_mb: float
    turns: list[tuple[float, float]]  # (active seconds, idle gap after it); the last gap is ignored
    active_frac: float = 0.6  # share of its request it uses while active
    idle_frac: float = 0.15  # share of its memory request it keeps while idle


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    x, acc = rng.random(), 0.0
    for item in weighted:
        acc += item[0] if isinstance(item[0], float) else item[1]
        if x < acc:
            return item
    return weighted[-1]


def _turns(rng: random.Random, mean_turns: float) -> list[tuple[float, float]]:
    n = 1 + int(rng.expovariate(1 / max(mean_turns - 1, 0.01)))
    out = []
    for _ in range(n):
        active = min(600.0, rng.lognormvariate(math.log(20), 1.0))
        gap = min(1800.0, 15.0 * rng.paretovariate(1.5))
        out.append((active, gap))
    return out


def mean_session_s(cfg: SimConfig) -> float:
    """Expected lifetime of an agent's sandbox (turns, gaps, keep-alive), by sampling."""
    rng = random.Random(12345)
    total = 0.0
    for _ in range(4000):
        turns = _turns(rng, cfg.mean_turns)
        total += sum(a for a, _ in turns) + sum(g for _, g in turns[:-1]) + cfg.keepalive_s
    return total / 4000


def plain_capacity_agents(cfg: SimConfig) -> float:
    """How many average agents the cluster holds by request, without overcommit."""
    cpu = sum(s * c for s, c, _ in SIZES)
    mem = sum(s * m for s, _, m in SIZES)
    return cfg.nodes * min(cfg.node_cpu / cpu, cfg.node_memory_mb / mem)


def generate(cfg: SimConfig) -> list[Agent]:
    with paused_gc():
        return _generate(cfg)


def _generate(cfg: SimConfig) -> list[Agent]:
    rng = random.Random(cfg.seed)
    horizon = cfg.hours * 3600
    rate = cfg.load * plain_capacity_agents(cfg) / mean_session_s(cfg) / len(cfg.regions)
    peak = rate * (1 + cfg.diurnal)
    agents: list[Agent] = []
    for r, region in enumerate(cfg.regions):
        phase = 2 * math.pi * r / len(cfg.regions)
        t = 0.0
        while True:
            t += rng.expovariate(peak)
            if t >= horizon:
                break
            if rng.random() * peak > rate * (1 + cfg.diurnal * math.sin(2 * math.pi * t / DAY_S + phase)):
                continue  # thinning: a non-homogeneous Poisson process
            premium = rng.random() < cfg.premium_share
            tenant = "premium" if premium else f"t{rng.randrange(cfg.tenants)}"
            _, cpu, mem = _pick(rng, SIZES)
            template = _pick(rng, TEMPLATES)[0]
            turns = _turns(rng, cfg.mean_turns)
            agents.append(Agent(0, t, region, tenant, 1 if premium else 0, template, cpu, mem, turns,
                                rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.2)))  # fmt: skip
    agents.sort(key=lambda a: a.t)
    for i, a in enumerate(agents):
        a.id = i
    return agents


def save_trace(agents: Iterable[Agent], path: Path) -> None:
    with open(path, "w") as f:
        for a in agents:
            f.write(json.dumps(asdict(a)) + "\n")


def load_trace(path: Path) -> list[Agent]:
    names = {f.name for f in fields(Agent)}
    agents = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        data = {k: v for k, v in json.loads(line).items() if k in names}
        data.setdefault("id", i)
        data["turns"] = [tuple(x) for x in data["turns"]]
        agents.append(Agent(**data))
    agents.sort(key=lambda a: a.t)
    return agents
