"""The one record shape every benchmark module returns, plus small shared helpers.

A benchmark module is any module listed in run.MODULES with `def run() -> list[Result]`.
run.py knows nothing about what a module measures: it groups results into tables by
`table`, resolves `baseline` (the key of another result, usually from baseline.py,
measured in the same run) into a ratio, checks `goal`, and plots every result that
names a `plot` (a CDF when it carries raw `samples`, a bar otherwise).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Goal:
    """`value <op> target`, checked on the figure itself or on its ratio to the baseline."""

    op: str  # "<=" or ">="
    target: float
    on: str = "value"  # "value" or "ratio"

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None:
            return None
        return x <= self.target if self.op == "<=" else x >= self.target

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"{self.op} {self.target:g}x baseline"
        return f"{self.op} {self.target:g} {unit}"


@dataclass
class Result:
    key: str  # unique across the run, e.g. "runtime.exec.p50"
    table: str  # the section/table this row belongs to
    metric: str  # row label
    value: float | None  # None when the measurement failed (see error)
    unit: str
    goal: Goal | None = None
    baseline: str | None = None  # key of another Result in the same unit
    note: str = ""  # printed as a footnote under the table
    samples: list[float] | None = None  # raw samples, in `unit`, for CDF plots
    plot: str | None = None  # plot title; results sharing it are drawn together
    label: str | None = None  # legend / bar label in that plot
    error: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


PLOTS = Path(os.environ.get("BENCH_PLOTS", Path(__file__).resolve().parent / "plots"))


def plot_path(title: str) -> Path:
    """Where the plot titled `title` is drawn (run.py's plots and modules' own)."""
    return PLOTS / f"{re.sub(r'[^a-z0-9]+', '_', title.lower()).strip('_')}.png"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def percentile(samples: list[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in [0, 100]."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("no samples")
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def latency_results(
    prefix: str,
    table: str,
    name: str,
    samples_ms: list[float],
    *,
    percentiles: tuple[int, ...] = (50, 95, 99),
    goals: dict[int, Goal] | None = None,
    baselines: dict[int, str] | None = None,
    plot: str | None = None,
    label: str | None = None,
    note: str = "",
) -> list[Result]:
    """One row per percentile (plus the mean); the p50 row carries the samples for plots."""
    goals = goals or {}
    baselines = baselines or {}
    out = []
    for p in percentiles:
        out.append(
            Result(
                key=f"{prefix}.p{p}",
                table=table,
                metric=f"{name} p{p} (n={len(samples_ms)})",
                value=percentile(samples_ms, p),
                unit="ms",
                goal=goals.get(p),
                baseline=baselines.get(p),
                samples=list(samples_ms) if p == percentiles[0] else None,
                plot=plot if p == percentiles[0] else None,
                label=label or name,
                note=note if p == percentiles[0] else "",
            )
        )
    mean = sum(samples_ms) / len(samples_ms)
    out.append(Result(key=f"{prefix}.mean", table=table, metric=f"{name} mean", unit="ms", value=mean))
    return out


def failed(key: str, table: str, metric: str, exc: BaseException, unit: str = "") -> Result:
    return Result(key=key, table=table, metric=metric, value=None, unit=unit,
                  error=f"{type(exc).__name__}: {exc}")  # fmt: skip


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as ms: ...; ms()` gives elapsed milliseconds (also after the block)."""
    start = time.perf_counter()
    end: list[float] = []

    def elapsed() -> float:
        return ((end[0] if end else time.perf_counter()) - start) * 1000

    try:
        yield elapsed
    finally:
        end.append(time.perf_counter())


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- run conditions (is anything else loading this host?) ---------------------------

OWN_NODE_KEYS: set[str] = set()  # node keys (cgroup names) of this run's NodeRuntimes
CONDITIONS: list[tuple[str, float, int, float]] = []  # (moment, loadavg, foreign procs, idle busy %)


def foreign_sandbox_processes() -> int:
    """Processes in cloche sandbox cgroups that do not belong to this benchmark run."""
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    root = "/sys/fs/cgroup/cloche" if v2 else "/sys/fs/cgroup/pids/cloche"
    count = 0
    try:
        keys = [k for k in os.listdir(root) if os.path.isdir(os.path.join(root, k))]
    except OSError:
        return 0
    for key in keys:
        if key in OWN_NODE_KEYS:
            continue
        for dirpath, _, files in os.walk(os.path.join(root, key)):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        count += sum(1 for _ in f)
                except OSError:
                    continue
    return count


def _cpu_jiffies() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def idle_host_busy(seconds: float = 1.0) -> float:
    """Host CPU busy (% of all CPUs) over `seconds` while this run does nothing: other load."""
    busy0, total0 = _cpu_jiffies()
    time.sleep(seconds)
    busy1, total1 = _cpu_jiffies()
    return 100 * (busy1 - busy0) / max(1.0, total1 - total0)


def note_conditions(moment: str) -> None:
    """Called between steps, when this run has nothing running."""
    busy = idle_host_busy()
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    CONDITIONS.append((moment, load, foreign_sandbox_processes(), busy))
