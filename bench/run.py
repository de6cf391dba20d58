"""Entry point of `make bench`: run every benchmark module, write BENCHMARKS.md and plots.

A benchmark module is listed in MODULES and has `def run() -> list[Result]` (see
results.py for the record); it may also define DESCRIPTIONS = {table: text}, printed
under each table's heading. Modules run in order, so the baselines (raw runc) are
measured first and in the same run as the figures compared with them. Adding the API
benchmarks later means writing bench/api_bench.py and appending "api_bench" here.

Sizes come from environment variables (listed at the end of BENCHMARKS.md), e.g.
BENCH_IDLE_SANDBOXES=100 for a quick iteration. BENCH_MODULES=baseline,runtime_bench
restricts the modules; BENCH_OUTPUT and BENCH_PLOTS move the markdown and the PNGs
(defaults: BENCHMARKS.md and bench/plots/, both committed). The raw results go to
bench/out/results.json (ignored by git); `run.py --render bench/out/results.json`
rewrites the markdown and plots from them without measuring again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import CONDITIONS, PLOTS, Goal, Result, log, note_conditions, percentile, plot_path  # noqa: E402

MODULES = ["baseline", "runtime_bench", "api_bench", "hibernate_bench", "state_bench", "e2b_bench", "scheduler_bench",
           "network_bench", "egress_proxy_bench", "isolation_bench", "cluster_bench"]  # fmt: skip
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


# ---- machine --------------------------------------------------------------------------


def _cmd(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "n/a"


def code_state() -> tuple[str, str]:
    """(HEAD, digest of uncommitted changes to src/ and supervisor/ or "")."""
    head = _cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    diff = _cmd("git", "-C", str(REPO), "diff", "HEAD", "--", "src", "supervisor")
    untracked = _cmd("git", "-C", str(REPO), "ls-files", "--others", "--exclude-standard", "src", "supervisor")
    dirty = diff + untracked
    return head, hashlib.sha256(dirty.encode()).hexdigest()[:8] if dirty else ""


def describe_code(start: tuple[str, str], end: tuple[str, str]) -> str:
    head, dirty = start
    text = f"{head} (plus uncommitted changes in src/)" if dirty else head
    if end != start:
        text += (f"; **the code changed during the run** (HEAD {end[0]} at the end"
                 f"{', with uncommitted changes' if end[1] else ''}): modules imported after "
                 "the change measured the new code")  # fmt: skip
    return text


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    os_name = "unknown"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return [
        ("Kernel (`uname -r`)", platform.release()),
        ("CPUs (`nproc`)", str(os.cpu_count())),
        ("CPU model", cpu),
        ("Memory", f"{mem_kb / 1024 / 1024:.1f} GiB ({mem_kb} kB MemTotal)"),
        ("OS", os_name),
        ("cgroups", cgroup),
        ("runc", _cmd("runc", "--version").splitlines()[0] if _cmd("runc", "--version") else "n/a"),
        ("Python", platform.python_version()),
    ]


# ---- formatting -----------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    a = abs(value)
    if a >= 100:
        s = f"{value:,.0f}"
    elif a >= 10:
        s = f"{value:.1f}"
    elif a >= 1:
        s = f"{value:.2f}"
    else:
        s = f"{value:.3f}"
    return f"{s} {unit}".strip()


def resolve(results: list[Result]) -> dict[str, tuple[Result | None, float | None, bool | None]]:
    """key -> (baseline result, ratio, goal met)."""
    by_key = {r.key: r for r in results}
    out = {}
    for r in results:
        base = by_key.get(r.baseline) if r.baseline else None
        ratio = None
        if base and base.value and r.value is not None:
            ratio = r.value / base.value
        met = r.goal.met(r.value, ratio) if r.goal and not r.error else None
        if r.goal and r.error:
            met = False
        out[r.key] = (base, ratio, met)
    return out


def markdown(run: dict[str, Any], results: list[Result], plots: list[Path], out: Path) -> str:
    descriptions: dict[str, str] = run["descriptions"]
    crashes: list[str] = run["crashes"]
    conditions = [tuple(c) for c in run["conditions"]]
    started = datetime.fromisoformat(run["started"])
    wall_s: float = run["wall_s"]
    resolved = resolve(results)
    lines = ["# Benchmarks", ""]
    lines += [
        f"Measured {started.strftime('%Y-%m-%d %H:%M UTC')} by `make bench` "
        f"(`.venv/bin/python bench/run.py`), wall time {wall_s / 60:.1f} min. "
        "Every baseline below was measured in this same run, on this machine. "
        "Regenerate with `make bench`; the sizes are set by environment variables "
        "(table at the end).",
        "",
    ]
    overrides: dict[str, str] = run["overrides"]
    if overrides:
        lines += ["Environment overrides: " + ", ".join(f"`{k}={v}`" for k, v in overrides.items()),
                  ""]  # fmt: skip
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in run["machine"]]
    lines.append("")

    if conditions:
        lines += [
            "## Run conditions",
            "",
            "Is anything else loading this host? Sampled between steps, while this run has "
            "nothing running: host CPU busy over 1 s (other workloads; 0-2 % is a quiet host), "
            "processes in cloche sandboxes that are not this run's, and the 1-minute load "
            "average (which still counts this run's previous step).",
            "",
            "| Moment | host CPU busy while idle | foreign sandbox processes | loadavg (1 min) |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {m} | {busy:.0f} % | {n} | {load:.2f} |" for m, load, n, busy in conditions]
        lines.append("")
        noisy = [c for c in conditions if c[3] > 10]
        if noisy:
            lines += [
                "**Note:** other work was using the CPU at "
                + ", ".join(f"{m} ({busy:.0f} %)" for m, _, _, busy in noisy)
                + "; figures measured around then are noisier than on a quiet host.",
                "",
            ]

    goals = [r for r in results if r.goal]
    missed = [r for r in goals if resolved[r.key][2] is False]
    lines += ["## Summary", "", f"{len(goals) - len(missed)} of {len(goals)} goals met.", ""]
    if goals:
        lines += ["| Benchmark | Metric | Figure | Goal | Status |", "|---|---|---:|---|---|"]
        for r in goals:
            status = {True: "met", False: "**MISSED**", None: ""}[resolved[r.key][2]]
            goal = r.goal.describe(r.unit) if r.goal else ""
            lines.append(f"| {r.table} | {r.metric} | {_figure(r, resolved)} | {goal} | {status} |")
        lines.append("")
    if crashes:
        lines += ["Benchmark modules that crashed:", ""]
        lines += [f"- `{c}`" for c in crashes]
        lines.append("")

    tables: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        tables[r.table].append(r)
    for table, rows in tables.items():
        lines += [f"## {table}", ""]
        if table in descriptions:
            lines += [descriptions[table], ""]
        lines += ["| Metric | Figure | Goal | Baseline (same run) | Ratio | Status |",
                  "|---|---:|---|---|---:|---|"]  # fmt: skip
        notes = []
        for r in rows:
            base, ratio, met = resolved[r.key]
            goal = r.goal.describe(r.unit) if r.goal else ""
            base_s = f"{fmt(base.value, base.unit)} ({base.label or base.metric})" if base else ""
            if r.baseline and not base:
                base_s = f"missing ({r.baseline})"
            ratio_s = f"{ratio:.2f}x" if ratio is not None else ""
            status = {True: "met", False: "**MISSED**", None: ""}[met]
            figure = fmt(r.value, r.unit) if not r.error or r.value is not None else "failed"
            lines.append(f"| {r.metric} | {figure} | {goal} | {base_s} | {ratio_s} | {status} |")
            if r.note and r.note not in notes:
                notes.append(r.note)
            if r.error:
                notes.append(f"**Error** ({r.metric}): {r.error}")
        lines.append("")
        lines += [f"- {n}" for n in notes]
        if notes:
            lines.append("")
        # this table's plots below it: its results' and one a module drew under the table's title
        for title in dict.fromkeys([*(r.plot for r in rows if r.plot), table]):
            if plot_path(title) in plots:
                lines += [_image(plot_path(title), out), ""]

    kept = kept_sections(out, set(tables))
    if kept:
        lines += kept

    if plots:
        lines += ["## Plots", "", "Every plot this run drew (those of a table are also shown under it).", ""]
        for p in plots:
            lines += [_image(p, out), ""]

    lines += ["## Sizes (environment variables)", "", "| Variable | Default | Meaning |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| `{k}` | {d or '(unset)'} | {m} |" for k, d, m in run["knobs"]]
    lines.append("")
    return "\n".join(lines)


MARKED = re.compile(r"<!-- (?P<name>[^>]+?): begin -->\n(?P<body>.*?)<!-- (?P=name): end -->\n?", re.S)


def kept_sections(path: Path, tables: set[str]) -> list[str]:
    """Marked sections other tools wrote into the previous file (`<!-- name: begin -->` ...
    `<!-- name: end -->`, e.g. by `cloche sim`), kept unless this run measured a table
    with the same heading, which supersedes them."""
    try:
        text = path.read_text()
    except OSError:
        return []
    kept = []
    for m in MARKED.finditer(text):
        heading = re.search(r"^## (.+)$", m.group("body"), re.M)
        if heading and heading.group(1).strip() in tables:
            continue
        kept += [m.group(0).rstrip("\n"), ""]
    return kept


def _image(plot: Path, out: Path) -> str:
    return f"![{plot.stem}]({Path(os.path.relpath(plot, out.parent)).as_posix()})"


def _figure(r: Result, resolved: dict[str, tuple[Result | None, float | None, bool | None]]) -> str:
    _, ratio, _ = resolved[r.key]
    if r.goal and r.goal.on == "ratio" and ratio is not None:
        return f"{ratio:.2f}x ({fmt(r.value, r.unit)})"
    return fmt(r.value, r.unit) if r.value is not None else f"failed ({r.error})"


KNOBS = [  # run.py's own; modules add theirs with a module-level KNOBS list
    ("BENCH_MODULES", ",".join(MODULES), "benchmark modules to run"),
    ("BENCH_OUTPUT", "BENCHMARKS.md", "markdown output path"),
    ("BENCH_PLOTS", "bench/plots", "where the PNG plots go"),
    ("BENCH_JSON", "bench/out/results.json", "raw results of the run (not committed; `--render` it)"),
]


# ---- plots ----------------------------------------------------------------------------


def plot(results: list[Result]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.plot and r.value is not None:
            groups[r.plot].append(r)
    written = []
    for title, rows in groups.items():
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
        if all(r.samples for r in rows):
            lo, hi = float("inf"), 0.0
            for r in rows:
                xs = sorted(r.samples or [])
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                p50 = percentile(xs, 50)
                ax.step(xs, ys, where="post", label=f"{r.label or r.metric} (p50 {fmt(p50)} {r.unit})")
                lo, hi = min(lo, xs[0]), max(hi, xs[-1])
            if hi / max(lo, 1e-9) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(rows[0].unit)
            ax.set_ylabel("fraction of samples <= x")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        else:
            labels = [r.label or r.metric for r in rows]
            values = [r.extra.get("kib", r.value or 0) if r.unit == "MiB" else (r.value or 0)
                      for r in rows]  # fmt: skip
            bars = ax.barh(labels, values, color="#4c72b0")
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("KiB per sandbox" if "KiB" in title else rows[0].unit)
            for r in rows:
                if r.goal and r.goal.on == "value" and r.unit == "MiB":
                    ax.axvline(
                        r.goal.target * 1024,
                        color="red",
                        ls="--",
                        lw=1,
                        label=f"goal: {r.goal.describe(r.unit)} {r.label or ''}".strip(),
                    )
                    ax.legend(loc="lower right", fontsize=8)
            ax.grid(True, axis="x", alpha=0.3)
            ax.margins(x=0.15)
        ax.set_title(title)
        fig.tight_layout()
        path = plot_path(title)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def drawn_plots(results: list[Result], started: datetime) -> list[Path]:
    """The plots drawn from `results`, then any other PNG a module drew into PLOTS during
    the run (e.g. the `cloche sim` policies), so that every plot of the run is linked;
    older files there (from runs of other modules) are left out."""
    written = plot(results)
    since = started.timestamp()
    return written + [p for p in sorted(PLOTS.glob("*.png")) if p not in written and p.stat().st_mtime >= since]


# ---- main -----------------------------------------------------------------------------


def measure() -> tuple[dict[str, Any], list[Result]]:
    code_at_start = code_state()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    names = [m for m in os.environ.get("BENCH_MODULES", ",".join(MODULES)).split(",") if m]
    results: list[Result] = []
    descriptions: dict[str, str] = {}
    knobs: list[tuple[str, str, str]] = []
    crashes: list[str] = []
    for name in names:
        log(f"module {name}")
        module: ModuleType | None = None
        try:
            module = importlib.import_module(name)
            results += module.run()
        except Exception as exc:
            traceback.print_exc()
            crashes.append(f"{name}: {type(exc).__name__}: {exc}")
        # Read after run(): a module may describe a table with what it just measured.
        descriptions.update(getattr(module, "DESCRIPTIONS", {}))
        knobs += getattr(module, "KNOBS", [])
    keys = [r.key for r in results]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        crashes.append(f"duplicate result keys: {sorted(dupes)}")
    note_conditions("end of run")
    run = {
        "started": started.isoformat(),
        "wall_s": time.perf_counter() - t0,
        "machine": machine() + [("cloche commit", describe_code(code_at_start, code_state()))],
        "overrides": {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")},
        "conditions": CONDITIONS,
        "descriptions": descriptions,
        "knobs": knobs + KNOBS,
        "crashes": crashes,
        "results": [dataclasses.asdict(r) for r in results],
    }
    return run, results


def load(path: Path) -> tuple[dict[str, Any], list[Result]]:
    run = json.loads(path.read_text())
    results = []
    for raw in run["results"]:
        goal = Goal(**raw.pop("goal")) if raw.get("goal") else None
        results.append(Result(**{k: v for k, v in raw.items() if k != "goal"}, goal=goal))
    return run, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="re-render the markdown and plots from a saved run, measuring nothing")  # fmt: skip
    args = parser.parse_args()
    if args.render:
        run, results = load(args.render)
    else:
        if os.geteuid() != 0:
            print("bench: must run as root (real runc containers, mounts, cgroups)", file=sys.stderr)
            return 2
        run, results = measure()
        saved = Path(os.environ.get("BENCH_JSON", BENCH / "out" / "results.json"))
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(run, indent=1))
        log(f"saved the raw results to {saved} (re-render with --render {saved})")
    plots = drawn_plots(results, datetime.fromisoformat(run["started"]))
    out = Path(os.environ.get("BENCH_OUTPUT", REPO / "BENCHMARKS.md"))
    out.write_text(markdown(run, results, plots, out))
    resolved = resolve(results)
    for r in results:
        base, ratio, met = resolved[r.key]
        extra = f"  ratio {ratio:.2f}x" if ratio is not None else ""
        flag = {True: "  [met]", False: "  [MISSED]", None: ""}[met]
        print(f"{r.key:45s} {fmt(r.value, r.unit):>22s}{extra}{flag}")
    log(f"wrote {out} and {len(plots)} plots (run took {run['wall_s']:.0f} s)")
    errors = [r for r in results if r.error]
    return 1 if run["crashes"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
