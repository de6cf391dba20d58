"""What a simulation reports: `Result` (what one policy's world counted), the markdown
table and verdict, and the section `cloche sim --write` maintains in BENCHMARKS.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloche.scheduler.sim.workload import SimConfig

ABLATION = "cloche-no-overcommit"  # cloche without overcommit: what hibernation, pools and placement add alone
MARK_BEGIN = "<!-- cloche sim: begin -->"
MARK_END = "<!-- cloche sim: end -->"


@dataclass
class Result:
    policy: str
    offered: int = 0
    admitted: int = 0
    rejected: int = 0
    waits: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    decisions_us: list[float] = field(default_factory=list)
    hibernations: int = 0
    wakes: int = 0
    failed_wakes: int = 0
    warm_starts: int = 0  # of the admitted (the others started cold)
    local_turns: int = 0
    turns: int = 0
    alloc_frac: list[float] = field(default_factory=list)
    used_frac: list[float] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    overflow_ticks: int = 0
    contention_ticks: int = 0
    node_ticks: int = 0
    wall_s: float = 0.0

    def pct(self, xs: list[float], p: float) -> float:
        if not xs:
            return 0.0
        s = sorted(xs)
        k = (len(s) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    def summary(self) -> dict[str, float]:
        mean = statistics.fmean
        return {
            "admitted": self.admitted,
            "offered": self.offered,
            "rejected": self.rejected,
            "admit_rate": self.admitted / self.offered if self.offered else 0.0,
            "wait_p50_s": self.pct(self.waits, 50),
            "wait_p99_s": self.pct(self.waits, 99),
            "latency_p50_ms": self.pct(self.latencies, 50),
            "latency_p99_ms": self.pct(self.latencies, 99),
            "alloc_util": mean(self.alloc_frac) if self.alloc_frac else 0.0,
            "used_util": mean(self.used_frac) if self.used_frac else 0.0,
            "running_mean": mean(self.running) if self.running else 0.0,
            "hibernations": self.hibernations,
            "wakes": self.wakes,
            "failed_wakes": self.failed_wakes,
            "warm_share": self.warm_starts / max(1, self.admitted),
            "local_share": self.local_turns / max(1, self.turns),
            "overflow_pct": 100 * self.overflow_ticks / max(1, self.node_ticks),
            "contention_pct": 100 * self.contention_ticks / max(1, self.node_ticks),
            "decision_p50_us": self.pct(self.decisions_us, 50),
            "decision_p99_us": self.pct(self.decisions_us, 99),
            "wall_s": self.wall_s,
        }


def table(results: Sequence[Result], cfg: SimConfig) -> str:
    rows = [
        ("agents admitted", lambda s: f"{s['admitted']:,} / {s['offered']:,} ({100 * s['admit_rate']:.1f}%)"),
        ("rejected (waited wait_s)", lambda s: f"{s['rejected']:,}"),
        ("queue wait p50 / p99", lambda s: f"{s['wait_p50_s']:.2f} s / {s['wait_p99_s']:.2f} s"),
        ("user latency p50 / p99", lambda s: f"{s['latency_p50_ms']:.0f} ms / {s['latency_p99_ms']:.0f} ms"),
        ("turns served in the user's region", lambda s: f"{100 * s['local_share']:.1f}%"),
        ("memory allocated / used (of physical)",
         lambda s: f"{100 * s['alloc_util']:.0f}% / {100 * s['used_util']:.0f}%"),
        ("agents running (mean)", lambda s: f"{s['running_mean']:,.0f}"),
        ("hibernations / wakes (failed)", lambda s: f"{s['hibernations']:,} / {s['wakes']:,} ({s['failed_wakes']})"),
        ("warm-pool starts", lambda s: f"{100 * s['warm_share']:.0f}%"),
        ("memory overflow / cpu contention (node-time)",
         lambda s: f"{s['overflow_pct']:.2f}% / {s['contention_pct']:.2f}%"),
        ("decision p50 / p99", lambda s: f"{s['decision_p50_us']:.0f} µs / {s['decision_p99_us']:.0f} µs"),
    ]  # fmt: skip
    sums = [r.summary() for r in results]
    lines = ["| | " + " | ".join(r.policy for r in results) + " |", "|---|" + "---:|" * len(results)]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(s) for s in sums) + " |")
    return "\n".join(lines)


def verdict(results: Sequence[Result]) -> tuple[bool, str]:
    """Whether cloche admits more than every baseline with p99 wait and p99 user latency
    no worse than any of them."""
    by = {r.policy: r.summary() for r in results}
    if "cloche" not in by or len(by) < 2:
        return False, "cloche and at least one baseline are needed for a comparison"
    c = by["cloche"]
    problems = []
    for name, s in by.items():
        if name in ("cloche", ABLATION):
            continue
        if c["admitted"] <= s["admitted"]:
            problems.append(f"admits no more than {name}")
        if c["wait_p99_s"] > s["wait_p99_s"] + 1e-9:
            problems.append(f"p99 wait worse than {name}")
        if c["latency_p99_ms"] > s["latency_p99_ms"] + 1e-9:
            problems.append(f"p99 latency worse than {name}")
    if problems:
        return False, "cloche " + "; ".join(problems)
    return True, "cloche admits more agents than every baseline, with equal or better p99 wait and user latency"


def describe(cfg: SimConfig, agents: int) -> str:
    return (
        f"{cfg.nodes} nodes ({cfg.node_cpu:g} cpu, {cfg.node_memory_mb / 1024:g} GiB each) in "
        f"{len(cfg.regions)} regions ({', '.join(cfg.regions)}); {cfg.hours:g} simulated hours, {agents:,} agents "
        f"offered at {cfg.load:g}x the cluster's capacity without overcommit (diurnal amplitude {cfg.diurnal:g}, "
        f"regions a third of a day apart), {cfg.tenants} tenants plus one priority-1 tenant "
        f"({100 * cfg.premium_share:.0f}% of agents); {cfg.mean_turns:g} turns per agent on average (lognormal "
        f"active bursts, Pareto idle gaps), then {cfg.keepalive_s:g} s keep-alive; wait_s {cfg.wait_s:g} s; "
        f"seed {cfg.seed}. Assumed latencies: cold start {cfg.cold_ms:g} ms, warm-pool start {cfg.warm_ms:g} ms, "
        f"wake {cfg.wake_local_ms:g} ms (same node) / {cfg.wake_remote_ms:g} ms (other node), hibernate "
        f"{cfg.hibernate_ms:g} ms; user latency = queue wait + start or wake + round trip (latency matrix). "
        f"cloche runs with overcommit cpu x{cfg.cpu_overcommit:g}, memory x{cfg.memory_overcommit:g}, usage "
        f"high-water {cfg.high_water:g}, preemption of sandboxes idle >= {cfg.preempt_idle_s:g} s; the baselines "
        f"place by request without overcommit and keep a static pool of {cfg.static_pool} on every node."
    )


def markdown(results: Sequence[Result], cfg: SimConfig, agents: int, command: str) -> str:
    ok, text = verdict(results)
    return "\n".join([
        "## Scheduler: simulated policies (`cloche sim`)", "",
        f"Written by `{command}`. {describe(cfg, agents)}", "",
        table(results, cfg), "",
        f"**{'Met' if ok else 'Not met'}:** {text}.", "",
    ])  # fmt: skip


def write_section(path: Path, section: str, name: str = "cloche sim") -> None:
    """Replace the marked section `name` of a markdown file, or append it."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
