"""E2B SDK against cloche: `sandbox.commands.run("true")` through the official `e2b`
SDK, compared in the same run with cloche's own SDK (`cloche.Client`, `sandbox.exec`)
on the same server and the same sandbox.

Run by bench/run.py (`run() -> list[Result]`) or standalone: `python bench/e2b_bench.py`
prints the figures. Sizes: BENCH_E2B_N round trips per client (default 300).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from results import Result, env_int, failed, latency_results, log, note_conditions  # noqa: E402
from server import BenchServer  # noqa: E402

DATA_PARENT = Path(os.environ.get("BENCH_DATA_DIR", "/var/tmp"))
T_RUN = 'E2B SDK: `commands.run("true")` round trip'
PLOT = "Command round trip: e2b SDK vs cloche SDK (CDF)"
DESCRIPTIONS = {
    T_RUN: (
        "A real `cloche up` process (pool size 1, rate limit lifted) and, in a second process, "
        "the official `e2b` SDK (2.x, sync `Sandbox`, unchanged, pointed at cloche with "
        'E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY) running `sandbox.commands.run("true")` '
        "back to back: one Connect RPC server stream (`process.Process/Start`, HTTP/1.1, JSON "
        'codec) per call, which the SDK always wraps as `/bin/bash -l -c "true"`. Baseline: '
        'cloche\'s own SDK in the same process on the same sandbox, `sandbox.exec(["true"])` '
        "(one JSON POST per call). The third row runs the same `bash -l -c true` through "
        "cloche's SDK, separating the cost of E2B's login shell from the cost of the protocol. "
        "Calls are interleaved round-robin so load on the 2 shared cores affects all three alike."
    ),
}


def bench_run_true(n: int) -> list[Result]:
    import cloche

    server = BenchServer("e2b", pool_size=1)
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update({"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": server.key})
    try:
        from e2b import Sandbox

        sbx = Sandbox.create(timeout=3600)
        with cloche.Client(server.url, server.key) as client:
            native = client.sandboxes.get(sbx.sandbox_id)
            calls = {
                "e2b": lambda: sbx.commands.run("true"),
                "cloche": lambda: native.exec(["true"]),
                "cloche_bash": lambda: native.exec(["/bin/bash", "-l", "-c", "true"]),
            }
            for fn in calls.values():  # warm-up: connections, bash's page cache
                for _ in range(20):
                    fn()
            samples: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(n):
                for name, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1000)
        sbx.kill()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.close()
    results = latency_results(
        "e2b.cloche_exec", T_RUN, "cloche SDK `sandbox.exec([\"true\"])`", samples["cloche"],
        plot=PLOT, label="cloche SDK exec(['true'])",
    )  # fmt: skip
    results += latency_results(
        "e2b.run_true", T_RUN, "e2b SDK `commands.run(\"true\")`", samples["e2b"],
        baselines={50: "e2b.cloche_exec.p50", 95: "e2b.cloche_exec.p95", 99: "e2b.cloche_exec.p99"},
        plot=PLOT, label="e2b SDK commands.run('true')",
    )  # fmt: skip
    results += latency_results(
        "e2b.cloche_bash", T_RUN, "cloche SDK `exec([\"/bin/bash\", \"-l\", \"-c\", \"true\"])`",
        samples["cloche_bash"], percentiles=(50, 99),
        baselines={50: "e2b.cloche_exec.p50"}, plot=PLOT, label="cloche SDK exec(bash -l -c true)",
    )  # fmt: skip
    return results


def run() -> list[Result]:
    n = env_int("BENCH_E2B_N", 300)
    note_conditions("before e2b")
    try:
        return bench_run_true(n)
    except Exception as exc:
        log(f"e2b FAILED: {exc!r}")
        return [failed("e2b.error", T_RUN, "benchmark failed", exc)]


if __name__ == "__main__":
    for r in run():
        value = "FAILED " + (r.error or "") if r.value is None else f"{r.value:.2f} {r.unit}"
        print(f"{r.metric:60s} {value}")
