"""What `cloche sim --geo` reports: per policy the user-perceived latency percentiles,
p99 against the ideal, migrations per user-day and bytes copied; the goal verdict; a
rich table, JSON, and the markdown section kept in BENCHMARKS.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich.table import Table

from cloche.geo.follow import FollowRule
from cloche.geo.sim.replay import CLOCHE, IDEAL, Outcome
from cloche.geo.sim.trace import GeoConfig, Trace

GOAL_P99_RATIO = 1.2
GOAL_MIGRATIONS_PER_USER_DAY = 1.0
MARK = "cloche sim geo"


def summarize(outcomes: Sequence[Outcome], cfg: GeoConfig) -> dict[str, dict[str, float]]:
    """Per policy: the numbers the table shows (the ideal's p99 is the ratio's base)."""
    user_days = cfg.users * cfg.days
    rows: dict[str, dict[str, float]] = {}
    for o in outcomes:
        q = statistics.quantiles(o.latencies_ms, n=100, method="inclusive") if len(o.latencies_ms) > 1 else [0.0] * 99
        rows[o.policy] = {
            "requests": len(o.latencies_ms),
            "p50_ms": q[49],
            "p99_ms": q[98],
            "mean_ms": statistics.fmean(o.latencies_ms) if o.latencies_ms else 0.0,
            "migrations": o.migrations,
            "follows": o.follows,
            "failovers": o.failovers,
            "failbacks": o.failbacks,
            "migrations_per_user_day": o.migrations / user_days,
            "copied_gb": o.copied_mb / 1024,
            "copied_mb_per_user_day": o.copied_mb / user_days,
        }
    ideal = rows.get(IDEAL, {}).get("p99_ms", 0.0)
    for row in rows.values():
        row["p99_vs_ideal"] = row["p99_ms"] / ideal if ideal else float("nan")
    return rows


def verdict(rows: dict[str, dict[str, float]]) -> tuple[bool, str]:
    c = rows.get(CLOCHE)
    if c is None or IDEAL not in rows:
        return False, "the cloche policy and the ideal are both needed"
    ok = c["p99_vs_ideal"] <= GOAL_P99_RATIO and c["migrations_per_user_day"] < GOAL_MIGRATIONS_PER_USER_DAY
    return ok, (
        f"cloche p99 is {c['p99_vs_ideal']:.2f}x the ideal (goal <= {GOAL_P99_RATIO:g}x) with "
        f"{c['migrations_per_user_day']:.3f} migrations per user-day (goal < {GOAL_MIGRATIONS_PER_USER_DAY:g})"
    )


COLUMNS: tuple[tuple[str, str], ...] = (
    ("p50", "{p50_ms:.0f} ms"),
    ("p99", "{p99_ms:.0f} ms"),
    ("p99 / ideal", "{p99_vs_ideal:.2f}x"),
    ("mean", "{mean_ms:.0f} ms"),
    ("migrations / user-day", "{migrations_per_user_day:.3f}"),
    ("follow / failover / failback", "{follows:,.0f} / {failovers:,.0f} / {failbacks:,.0f}"),
    ("copied", "{copied_gb:,.1f} GB ({copied_mb_per_user_day:.1f} MB / user-day)"),
)


def rich_table(rows: dict[str, dict[str, float]]) -> Table:
    table = Table("policy", *(name for name, _ in COLUMNS))
    for policy, row in rows.items():
        table.add_row(policy, *(fmt.format(**row) for _, fmt in COLUMNS))
    return table


def describe(cfg: GeoConfig, rule: FollowRule, trace: Trace, regions: Sequence[str], home: str) -> str:
    outages = "; ".join(f"{o.region} down {(o.end - o.start) / 3600:.1f} h from day {o.start / 86400:.1f}"
                        for o in trace.outages) or "none"  # fmt: skip
    return (
        f"{cfg.users:,} users over {cfg.days:g} days in {len(regions)} AWS regions ({', '.join(regions)}), "
        f"round-trip times from the published matrix in `src/cloche/geo/data/aws_rtt_2017.csv` plus each "
        f"user's last mile (lognormal around {cfg.access_ms:g} ms); {cfg.sessions_per_day:g} sessions per "
        f"user-day in local daytime, {cfg.requests_per_session:g} requests per session, each session starting "
        f"with a wake; {100 * cfg.travel_per_day:g}% of users at home leave each day on a trip of "
        f"{cfg.trip_days:g} days (median) and {100 * cfg.stray_share:g}% of sessions come from a random other "
        f"region (noise): {100 * trace.away_share():.1f}% of requests sent away from home; outages: {outages}. "
        f"Agents lognormal around {cfg.agent_mb:g} MB, {100 * cfg.base_share:g}% of their chunks in every region "
        f"already, {100 * cfg.dirty_per_hour:g}%/h rewritten since leaving a region; copies at "
        f"{cfg.copy_mb_s:g} MB/s on the waking request's path. home-region is {home}. Follow rule: window "
        f"{rule.window_s / 60:g} min, at least {rule.min_requests} request(s), threshold {rule.threshold:g}, "
        f"cooldown {rule.cooldown_s / 60:g} min. Seed {cfg.seed}; {len(trace.requests):,} requests."
    )


def markdown(rows: dict[str, dict[str, float]], text: str, command: str) -> str:
    ok, why = verdict(rows)
    head = "| policy | " + " | ".join(name for name, _ in COLUMNS) + " |"
    lines = ["## Geo simulation (`cloche sim --geo`)", "", f"Written by `{command}`. {text}", "", head,
             "|---|" + "---:|" * len(COLUMNS)]  # fmt: skip
    lines += [f"| {p} | " + " | ".join(fmt.format(**row) for _, fmt in COLUMNS) + " |" for p, row in rows.items()]
    return "\n".join([*lines, "", f"**{'Met' if ok else 'Not met'}:** {why}.", ""])


def as_json(rows: dict[str, dict[str, float]], cfg: GeoConfig, rule: FollowRule) -> dict[str, Any]:
    ok, why = verdict(rows)
    return {"config": asdict(cfg), "rule": asdict(rule), "policies": rows, "goal_met": ok, "goal": why}
