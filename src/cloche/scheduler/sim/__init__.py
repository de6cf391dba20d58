"""`cloche sim`: the real scheduler code against simulated nodes and a workload.

The simulator is a discrete-event loop that drives the server's own decision loop
(`cloche.scheduler.loop.AdmissionLoop`): nodes, placement (filters, scorers, sampling),
admission (quotas, priorities, the fair queue), preemption by hibernation, the guard of
an overloaded node and warm-pool autosizing are the code the server runs; only time and
the sandboxes are simulated. Several policies run over the same workload (same seed) side by side:

- `random`, `first-fit`, `kubernetes` (LeastAllocated + BalancedAllocation): requests
  against capacity (no overcommit), idle sandboxes hold their room until their
  keep-alive timeout, a static warm pool of the main template on every node;
- `cloche`: overcommit with live-usage feedback, region-aware scoring, preemption by
  hibernating least-recently-used idle sandboxes (a later request wakes them, paying
  the wake latency), warm pools sized by claim rate.

Workload: per region, Poisson arrivals whose rate follows a diurnal cycle (regions
offset in phase like time zones); each agent has a request size from a small
heavy-tailed mix, a number of turns (active bursts, lognormal) separated by idle gaps
(Pareto, heavy-tailed), then a keep-alive idle period before it is killed. A trace file
(JSON lines, one agent per line, the fields of `Agent`) replaces the synthetic workload.

Every create waits up to `wait_s` in the admission queue and is rejected after that.
Latencies that are not measured here (cold and warm start, wake, hibernate) are
parameters; their defaults are stated in the report.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cloche.scheduler import policies
from cloche.scheduler.scorers.latency import LatencyMatrix
from cloche.scheduler.sim.report import (
    ABLATION,
    MARK_BEGIN,
    MARK_END,
    Result,
    describe,
    markdown,
    table,
    verdict,
    write_section,
)
from cloche.scheduler.sim.workload import Agent, SimConfig, generate, load_trace, save_trace
from cloche.scheduler.sim.world import World

SIM_POLICIES = (*policies.POLICIES, ABLATION)
__all__ = ["ABLATION", "MARK_BEGIN", "MARK_END", "SIM_POLICIES", "Agent", "Result", "SimConfig", "describe",
           "generate", "load_trace", "markdown", "run", "save_trace", "simulate", "table", "verdict",
           "write_section"]  # fmt: skip


def simulate(cfg: SimConfig, policy_names: Sequence[str] = policies.POLICIES, agents: list[Agent] | None = None,
             matrix: LatencyMatrix | None = None, workers: int | None = None) -> list[Result]:  # fmt: skip
    """Every policy over the same agents, each in its own world. Worlds share nothing (a
    World never changes an agent), so they run in up to `workers` processes (default:
    one per usable cpu), the heaviest first; the results come back in `policy_names` order."""
    agents = agents if agents is not None else generate(cfg)
    matrix = matrix or LatencyMatrix()
    workers = min(len(policy_names), workers or len(os.sched_getaffinity(0)))
    if workers <= 1:
        return [World(name, cfg, agents, matrix).run() for name in policy_names]
    heaviest_first = sorted(policy_names, key=lambda name: -_WEIGHT.get(name, 1))
    # fork: the workers inherit the agents instead of unpickling them
    with ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), _share, (cfg, agents, matrix)) as pool:
        done = dict(zip(heaviest_first, pool.map(_run_world, heaviest_first), strict=True))
    return [done[name] for name in policy_names]


_WEIGHT = {ABLATION: 4.5, "cloche": 2.3, "kubernetes": 1.1}  # rough cost of a world relative to a baseline's
_shared: tuple[SimConfig, list[Agent], LatencyMatrix] | None = None


def _share(cfg: SimConfig, agents: list[Agent], matrix: LatencyMatrix) -> None:
    global _shared
    _shared = (cfg, agents, matrix)


def _run_world(name: str) -> Result:
    assert _shared is not None, "the pool's initializer shares the workload"
    cfg, agents, matrix = _shared
    return World(name, cfg, agents, matrix).run()


def run(cfg: SimConfig, policy_names: Sequence[str], trace: Path | None = None, save: Path | None = None,
        output: Path | None = None, command: str = "cloche sim") -> tuple[list[Result], str, bool]:  # fmt: skip
    """What `cloche sim` does: simulate, render, optionally write the markdown section."""
    unknown = [p for p in policy_names if p not in SIM_POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(SIM_POLICIES)}")
    agents = load_trace(trace) if trace else generate(cfg)
    if save:
        save_trace(agents, save)
    results = simulate(cfg, policy_names, agents)
    section = markdown(results, cfg, len(agents), command)
    if output is not None:
        write_section(output, section)
    return results, section, verdict(results)[0]
