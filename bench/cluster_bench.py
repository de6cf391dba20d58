"""Cluster mode benchmarks (issue #15), each against a baseline measured in the same run:
exec and invoke through a remote node vs an embedded `cloche up`, placements per second through the
cluster API vs embedded and in `cloche sim` at 10,000 nodes vs 1,000, failover time after
kill -9 of a node, and the resume of 100 MB from S3 vs a local blob store.

It runs on a real `LocalCluster` (cluster_rig.py: three nodes, two replicas, networking
off), which takes about 30 s to start and is stopped, with everything it made, at the end.
`make bench` runs it with the others; alone, without touching the rest of BENCHMARKS.md:

    .venv/bin/python bench/cluster_bench.py            # measure, then write its section
    .venv/bin/python bench/cluster_bench.py --render bench/out/cluster_bench.json

which renders its tables (run.py's renderer) into the marked section of BENCHMARKS.md
(`<!-- cluster_bench: begin -->`); run.py keeps that section whenever it rewrites the
file, unless the run measured these tables itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_api import T_EXEC, T_PLACE, exec_results, placement_results  # noqa: E402
from cluster_failover import T_FAILOVER, failover_results  # noqa: E402
from cluster_resume import T_RESUME, resume_results  # noqa: E402
from cluster_rig import cluster  # noqa: E402
from results import CONDITIONS, Result, env_float, failed, log, note_conditions, percentile  # noqa: E402
from server import BenchServer  # noqa: E402

from cloche.scheduler import sim  # noqa: E402

T_SIM = "Cluster mode: placements per second in `cloche sim`"
TABLES = (T_EXEC, T_PLACE, T_SIM, T_FAILOVER, T_RESUME)
SECTION = "cluster_bench"
REPO = Path(__file__).resolve().parent.parent

KNOBS = [
    ("BENCH_CLUSTER_LEASE_S", "4", "node lease of the benchmark cluster (its nodes fence 1.5 s before expiry)"),
    ("BENCH_CLUSTER_EXEC_N", "500", "exec round trips per path"),
    ("BENCH_CLUSTER_INVOKE_N", "150", "agent invokes per API"),
    ("BENCH_CLUSTER_CREATES", "64", "creates timed per API"),
    ("BENCH_CLUSTER_CONCURRENCY", "16", "creates in flight at once"),
    ("BENCH_CLUSTER_FAILOVERS", "5", "kill -9 failover trials"),
    ("BENCH_CLUSTER_RESUME_N", "3", "100 MB resumes per blob store"),
    ("BENCH_CLUSTER_SIM_HOURS", "0.02", "simulated hours of the 10,000- and 1,000-node `cloche sim` runs"),
]

SETUP = ("`LocalCluster` (what `cloche cluster local` runs): etcd, PostgreSQL, SeaweedFS S3, two `cloche server` "
         "replicas and three `cloche node run` agents, all on this machine over loopback, networking off "
         "(`CLOCHE_NETWORK=0`), no warm pools, rate limits lifted; the embedded baseline is a `cloche up` with the "
         "same settings.")  # fmt: skip
DESCRIPTIONS = {
    T_EXEC: (
        SETUP + ' Exec is `POST /v1/sandboxes/{id}/exec` of `["true"]` from one keep-alive httpx client, '
        "sequential, after 20 unmeasured; through the cluster it goes client -> replica 0 -> node API (HTTPS, "
        "cluster CA) -> node. Invoke is `POST /v1/apps/memo/agents/{key}/invoke` to a running instance of the "
        "bundled memo agent (`src/cloche/examples/memo_agent.py`), after 20 unmeasured. The node API hop alone: "
        "`RemoteNode.exec` from this process to a sandbox the cluster placed, against `NodeRuntime.exec` on a "
        "runtime in this process (networking off)."
    ),
    T_PLACE: (
        "`POST /v1/sandboxes` (default spec, cold: no warm pool) from one asyncio httpx client with the stated "
        "number in flight, through replica 0 of the cluster and through the embedded `cloche up`; the sandboxes "
        "are killed after the timing. The three nodes share this machine's cores, so the cluster cannot create "
        "faster than one node here: the figure is what placement and the extra hops cost."
    ),
    T_SIM: (
        "The scheduler code the server runs, driven by `cloche sim`'s simulator (`cloche.scheduler.sim`, the "
        "`cloche` policy, load 3, seed 1; the same as `cloche sim --nodes N --hours H --load 3 --policies cloche`) "
        "on 10,000 simulated nodes, against the same run on 1,000 nodes. Decisions/s is one core's rate over the "
        "time spent in placement decisions; agents/s is the whole simulation (workload, admission, time steps)."
    ),
    T_FAILOVER: (
        "Each trial creates a sandbox through the cluster, writes a file in it, waits for the leader to "
        "checkpoint it to S3, then kill -9s the node process holding it and polls exec (`cat` of the file) "
        "every 50 ms through replica 0 until the file's content comes back from another node: the lease "
        "expires, the fleet marks the sandbox lost, and the next request resumes it elsewhere from its "
        "checkpoint. The killed node is restarted (untimed) before the next trial."
    ),
    T_RESUME: (
        "Two `NodeRuntime`s in this process share a blob store: the first fills /workspace with 100 MB of "
        "random bytes (10 MB files) and hibernates with keep_local=False; the second adopts the sandbox from "
        "that snapshot (what a node does on failover or drain), timed until it runs, then kills it; its S3 "
        "chunk cache is emptied before each trial. S3 is the cluster's SeaweedFS; the baseline store is a "
        "file:// directory on the same disk. The rows after the timings say where a resume's time goes: each "
        "blob store step timed around its calls and summed over the snapshot store's fetch threads (up to 8 "
        "requests in flight), so they add up to more than the wall time."
    ),
}


def _sim_rate(nodes: int, hours: float) -> tuple[float, float, float, int]:
    """(decisions/s, decision p99 in µs, agents/s of the whole simulation, agents)."""
    cfg = sim.SimConfig(nodes=nodes, hours=hours, load=3, seed=1)
    agents = sim.generate(cfg)
    start = time.perf_counter()
    result = sim.simulate(cfg, ["cloche"], agents, workers=1)[0]
    wall = time.perf_counter() - start
    spent = sum(result.decisions_us) / 1e6
    return len(result.decisions_us) / spent, percentile(result.decisions_us, 99), len(agents) / wall, len(agents)


def sim_results() -> list[Result]:
    hours = env_float("BENCH_CLUSTER_SIM_HOURS", 0.02)
    out = []
    for nodes in (1_000, 10_000):
        log(f"cluster: `cloche sim` on {nodes} nodes, {hours:g} h")
        rate, p99, agents_s, agents = _sim_rate(nodes, hours)
        base = {"label": "1,000 nodes"} if nodes == 1_000 else {"baseline": "cluster.sim.1000.rate"}
        out += [
            Result(f"cluster.sim.{nodes}.rate", T_SIM, f"placement decisions/s, {nodes:,} nodes ({agents:,} agents)",
                   rate, "placements/s", **base),
            Result(f"cluster.sim.{nodes}.p99", T_SIM, f"decision p99, {nodes:,} nodes", p99 / 1000, "ms"),
            Result(f"cluster.sim.{nodes}.agents", T_SIM, f"agents simulated per second, {nodes:,} nodes", agents_s,
                   "agents/s"),
        ]  # fmt: skip
    return out


def _step(name: str, table: str, step: Callable[[], list[Result]]) -> list[Result]:
    note_conditions(f"before cluster {name}")
    try:
        return step()
    except Exception as exc:
        traceback.print_exc()
        return [failed(f"cluster.{name}.failed", table, f"{name} benchmark", exc)]


def run() -> list[Result]:
    out = _step("sim", T_SIM, sim_results)
    with cluster() as rig:
        embedded = BenchServer("cluster-embedded", pool_size=0, env={"CLOCHE_NETWORK": "0"})
        try:
            out += _step("exec", T_EXEC, lambda: exec_results(rig, embedded))
            out += _step("placements", T_PLACE, lambda: placement_results(rig, embedded))
        finally:
            embedded.close()
        out += _step("resume", T_RESUME, lambda: asyncio.run(resume_results(rig)))
        out += _step("failover", T_FAILOVER, lambda: failover_results(rig))
    return out


# ---- its section of BENCHMARKS.md, when run alone ----------------------------------------


def write_section(saved: dict, results: list[Result], target: Path) -> str:
    """Render the tables into the marked section of `target` (before its plots)."""
    import run as runner

    results = sorted(results, key=lambda r: TABLES.index(r.table))  # tables in TABLES' order
    plots = runner.drawn_plots(results, datetime.fromisoformat(saved["started"]))
    scratch = target.with_name(f".{SECTION}.md")  # no kept sections of its own; images relative to target
    rendered = runner.markdown(saved, results, plots, scratch)
    first = min(rendered.index(f"\n## {r.table}\n") for r in results)
    tables = rendered[first : rendered.index("\n## Plots" if plots else "\n## Sizes")]
    resolved = runner.resolve(results)
    goals = [r for r in results if r.goal]
    missed = [r.metric for r in goals if resolved[r.key][2] is False]
    machine = dict(saved["machine"])
    conditions = "; ".join(f"{m}: host CPU busy {busy:.0f} %" for m, _, _, busy in saved["conditions"])
    head = (f"_Measured {saved['started'][:16].replace('T', ' ')} UTC by `.venv/bin/python bench/cluster_bench.py` "
            f"alone (see its docstring), wall time {saved['wall_s'] / 60:.1f} min, cloche commit "
            f"{machine.get('cloche commit', '?')}, on {machine.get('CPUs (`nproc`)')} CPUs "
            f"({machine.get('CPU model')}, kernel {machine.get('Kernel (`uname -r`)')}), the machine above. "
            f"{len(goals) - len(missed)} of {len(goals)} goals met"
            + (f" (missed: {'; '.join(missed)})" if missed else "")
            + f"; not counted in the Summary above. Run conditions: {conditions}._")  # fmt: skip
    title, body = tables.strip("\n").split("\n", 1)
    section = f"<!-- {SECTION}: begin -->\n{title}\n\n{head}\n{body.rstrip()}\n\n<!-- {SECTION}: end -->\n"
    text = target.read_text()
    mine = re.compile(rf"<!-- {SECTION}: begin -->.*?<!-- {SECTION}: end -->\n", re.S)
    if mine.search(text):
        text = mine.sub(lambda _: section, text)
    else:
        at = text.find("\n## Plots\n")
        at = len(text) if at < 0 else at + 1
        text = f"{text[:at].rstrip()}\n\n{section}\n{text[at:]}"
    target.write_text(text)
    return section


def main() -> None:
    import run as runner

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="write the section from a saved run")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.render:
        saved, results = runner.load(args.render)
    else:
        started, t0 = datetime.now(UTC), time.perf_counter()
        code = runner.code_state()
        results = run()
        note_conditions("end of run")
        saved = {"started": started.isoformat(), "wall_s": time.perf_counter() - t0, "conditions": CONDITIONS,
                 "machine": runner.machine() + [("cloche commit", runner.describe_code(code, runner.code_state()))],
                 "overrides": {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")},
                 "descriptions": DESCRIPTIONS, "knobs": KNOBS, "crashes": [],
                 "results": [dataclasses.asdict(r) for r in results]}  # fmt: skip
        path = REPO / "bench" / "out" / f"{SECTION}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1))
        log(f"saved the raw results to {path}")
    for r in results:
        print(f"{r.key:32s} {r.value if r.value is not None else r.error} {r.unit}")
    print(write_section(saved, results, args.output))


if __name__ == "__main__":
    main()
