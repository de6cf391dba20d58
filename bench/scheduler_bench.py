"""Scheduler benchmarks: decision throughput and latency at 1,000 nodes, and the
`cloche sim` comparison of placement policies (the same code `cloche sim` runs).

No root, containers or network: the scheduler is pure computation over its node model.
Run alone with `BENCH_MODULES=scheduler_bench .venv/bin/python bench/run.py`, or directly
(`.venv/bin/python bench/scheduler_bench.py`) to print the figures.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import Goal, Result, env_float, env_int, log, percentile, plot_path  # noqa: E402

from cloche.scheduler import policies, sim  # noqa: E402
from cloche.scheduler.cluster import Cluster  # noqa: E402
from cloche.scheduler.model import Ask, Node, Overcommit, Resources  # noqa: E402
from cloche.scheduler.sim.plot import draw  # noqa: E402

TABLE_DECISIONS = "Scheduler: placement decisions at 1,000 nodes"
TABLE_SIM = "Scheduler: simulated policies (`cloche sim`)"
REGIONS = ("us", "eu", "ap")

KNOBS = [
    ("BENCH_SCHED_NODES", "1000", "nodes in the decision benchmark"),
    ("BENCH_SCHED_DECISIONS", "20000", "placements measured"),
    ("BENCH_SIM_NODES", "24", "simulated nodes for the policy comparison"),
    ("BENCH_SIM_HOURS", "6", "simulated hours"),
    ("BENCH_SIM_LOAD", "3", "offered load (x capacity without overcommit)"),
]

DESCRIPTIONS = {
    TABLE_DECISIONS: (
        "One process, one core: `Scheduler.schedule` (sample, filter, score, select, reserve) on a cluster of "
        "`BENCH_SCHED_NODES` nodes (32 cpu, 128 GiB, overcommit cpu x4 / memory x1.5, three regions) held at "
        "about 60% allocated: every placement of a random ask (0.25-2 cpu, 256-4096 MB, a random user region) "
        "is followed by the release of a random live one. Throughput counts the whole loop (place, reserve, "
        "release); latency is each `schedule` call. The baseline is the same pipeline scoring every node "
        "(Kubernetes' default at this size scores a share of them)."
    ),
}


def _cluster(n: int) -> Cluster:
    return Cluster(Node(f"n{i}", Resources(32, 131072, 1e7), {"region": REGIONS[i % 3]}, Overcommit(4, 1.5))
                   for i in range(n))  # fmt: skip


def decisions(n_nodes: int, n: int, full_scan: bool = False, seed: int = 7) -> tuple[float, list[float]]:
    cluster = _cluster(n_nodes)
    s = policies.build("cloche", cluster, seed=seed, sample=(n_nodes if full_scan else None))
    rng = random.Random(seed)
    asks = [Ask(Resources(rng.choice((0.25, 0.5, 1, 2)), rng.choice((256, 512, 1024, 4096))),
                template=rng.choice(("python", "node")), region=rng.choice(REGIONS)) for _ in range(4096)]  # fmt: skip
    live: list[int] = []
    target = 0.6 * sum(nd.allocatable.memory_mb for nd in cluster.nodes)
    i = 0
    while sum(nd.allocated.memory_mb for nd in cluster.nodes[:50]) * n_nodes / 50 < target and i < 10**6:
        if s.schedule(asks[i % 4096], i).node is not None:
            live.append(i)
        i += 1
    lat = []
    pc = time.perf_counter
    gc.collect()
    start = pc()
    for k in range(i, i + n):
        t = pc()
        placed = s.schedule(asks[k % 4096], k).node is not None
        lat.append((pc() - t) * 1000)
        if placed:
            live.append(k)
        j = rng.randrange(len(live))
        live[j], live[-1] = live[-1], live[j]
        cluster.release(live.pop())
    rate = n / (pc() - start)
    return rate, lat


def run() -> list[Result]:
    return run_decisions() + run_sim()


def run_decisions() -> list[Result]:
    n_nodes = env_int("BENCH_SCHED_NODES", 1000)
    n = env_int("BENCH_SCHED_DECISIONS", 20000)
    log(f"scheduler: {n} placements on {n_nodes} nodes (sampled, then full scan)")
    rate, lat = decisions(n_nodes, n)
    full_rate, full_lat = decisions(n_nodes, max(2000, n // 10), full_scan=True)
    out = [
        Result(
            "scheduler.decisions.rate",
            TABLE_DECISIONS,
            f"placements per second, log2(n) sampling (n={n})",
            rate,
            "placements/s",
            goal=Goal(">=", 10_000),
            baseline="scheduler.decisions.full.rate",
        ),  # fmt: skip
        Result("scheduler.decisions.p50", TABLE_DECISIONS, "decision p50", percentile(lat, 50), "ms"),
        Result(
            "scheduler.decisions.p99", TABLE_DECISIONS, "decision p99", percentile(lat, 99), "ms", goal=Goal("<=", 2.0)
        ),  # fmt: skip
        Result("scheduler.decisions.max", TABLE_DECISIONS, "decision max", max(lat), "ms"),
        Result(
            "scheduler.decisions.full.rate",
            TABLE_DECISIONS,
            "placements per second, every node scored",
            full_rate,
            "placements/s",
            label="full scan",
        ),  # fmt: skip
        Result(
            "scheduler.decisions.full.p99",
            TABLE_DECISIONS,
            "decision p99, every node scored",
            percentile(full_lat, 99),
            "ms",
        ),  # fmt: skip
    ]
    return out


def run_sim() -> list[Result]:
    out = []
    cfg = sim.SimConfig(nodes=env_int("BENCH_SIM_NODES", 24), hours=env_float("BENCH_SIM_HOURS", 6.0),
                        load=env_float("BENCH_SIM_LOAD", 3.0))  # fmt: skip
    log(f"scheduler: cloche sim, {cfg.hours:g} h on {cfg.nodes} nodes at load {cfg.load:g}")
    command = f"cloche sim --nodes {cfg.nodes} --hours {cfg.hours:g} --load {cfg.load:g}"
    results, section, ok = sim.run(cfg, sim.SIM_POLICIES, command=command)
    DESCRIPTIONS[TABLE_SIM] = section.split("\n", 2)[2].strip()  # the section without its own heading
    draw(results, plot_path(TABLE_SIM), f"{command} (seed {cfg.seed})")  # linked by run.py: drawn during the run
    by = {r.policy: r.summary() for r in results}
    for name, s in by.items():
        out.append(Result(f"scheduler.sim.{name}.admitted", TABLE_SIM, f"{name}: agents admitted",
                          s["admitted"], "agents"))  # fmt: skip
    out.append(Result("scheduler.sim.cloche_wins", TABLE_SIM,
                      "cloche admits more than every baseline with equal or better p99 wait and user latency "
                      "(1 = yes)", 1.0 if ok else 0.0, "", goal=Goal(">=", 1)))  # fmt: skip
    return out


def decision_section() -> str:
    """The decision figures as markdown (what `python bench/scheduler_bench.py` writes)."""
    rows = run_decisions()
    lines = [f"## {TABLE_DECISIONS}", "", DESCRIPTIONS[TABLE_DECISIONS], "",
             "| Metric | Figure | Goal | Status |", "|---|---:|---|---|"]  # fmt: skip
    for r in rows:
        goal = r.goal.describe(r.unit) if r.goal else ""
        status = ("met" if r.goal.met(r.value, None) else "**MISSED**") if r.goal else ""
        value = f"{r.value:,.0f}" if r.value >= 100 else f"{r.value:.3f}"
        lines.append(f"| {r.metric} | {value} {r.unit} | {goal} | {status} |")
    lines += ["", "Written by `.venv/bin/python bench/scheduler_bench.py`."]
    return "\n".join(lines)


if __name__ == "__main__":
    section = decision_section()
    print(section)
    out = Path(os.environ.get("BENCH_OUTPUT", Path(__file__).resolve().parent.parent / "BENCHMARKS.md"))
    sim.write_section(out, section, name="scheduler decisions")
    print(f"wrote the scheduler decisions section of {out}")
