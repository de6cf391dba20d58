"""`cloche sim --geo`: the geo simulator's invariants on small traces (same seed, same
numbers; nobody beats the ideal; following travelling users beats a home region;
migrations and bytes are counted; a region that is down gets no agents)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cloche.geo.follow import FollowRule
from cloche.geo.sim import IDEAL, POLICIES, GeoConfig, GeoRun, simulate
from cloche.geo.sim.report import summarize

SMALL = GeoConfig(users=150, days=3.0, seed=5, travel_per_day=0.15, outages=2)


@pytest.fixture(scope="module")
def run() -> GeoRun:
    return simulate(SMALL)


def test_same_seed_same_numbers_other_seed_other_numbers(run: GeoRun) -> None:
    again = simulate(SMALL)
    for a, b in zip(run.outcomes, again.outcomes, strict=True):
        assert (a.latencies_ms, a.placements, a.copied_mb) == (b.latencies_ms, b.placements, b.copied_mb)
    other = simulate(replace(SMALL, seed=6))
    assert other.outcomes[0].latencies_ms != run.outcomes[0].latencies_ms


def test_no_policy_beats_the_ideal_at_any_percentile(run: GeoRun) -> None:
    ideal = run.outcomes[-1]
    assert ideal.policy == IDEAL and [o.policy for o in run.outcomes[:-1]] == list(POLICIES)
    rows = summarize(run.outcomes, SMALL)
    for o in run.outcomes[:-1]:
        assert all(i <= x for i, x in zip(ideal.latencies_ms, o.latencies_ms, strict=True))
        for p in ("p50_ms", "p99_ms", "mean_ms"):
            assert rows[IDEAL][p] <= rows[o.policy][p]


def test_following_travelling_users_beats_one_home_region_on_p99(run: GeoRun) -> None:
    assert run.trace.away_share() > 0.1  # the trace has travellers
    rows = summarize(run.outcomes, SMALL)
    assert rows["cloche"]["p99_ms"] < rows["home-region"]["p99_ms"]
    assert rows["cloche"]["follows"] > 0


def test_migrations_and_bytes_are_counted(run: GeoRun) -> None:
    users = len({r.user for r in run.trace.requests})
    for o in run.outcomes[:-1]:
        assert o.migrations == o.follows + o.failovers + o.failbacks
        assert len(o.placements) == users + o.migrations  # a first placement each, then every move
        assert (o.copied_mb > 0) == (o.migrations > 0)
    by = {o.policy: o for o in run.outcomes}
    assert by["nearest-static"].follows == by["home-region"].follows == 0
    rows = summarize(run.outcomes, SMALL)
    assert rows["cloche"]["migrations_per_user_day"] == by["cloche"].migrations / (SMALL.users * SMALL.days)


def test_a_region_that_is_down_gets_no_agents_and_its_agents_resume_elsewhere() -> None:
    cfg = replace(SMALL, users=120, travel_per_day=0.0, outages=3, outage_hours=(12.0, 30.0))
    run = simulate(cfg, FollowRule())
    assert run.trace.outages
    for o in run.outcomes[:-1]:
        for t, region in o.placements:
            assert region in run.trace.live(tuple(sorted(set(run.trace.homes) | {region})), t), (o.policy, t, region)
    assert sum(o.failovers for o in run.outcomes[:-1]) > 0


def invoke_json(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[int, dict[str, Any]]:
    from cloche.cli import app, ui

    stdout = io.StringIO()
    monkeypatch.setattr(ui, "out", Console(file=stdout, width=200, no_color=True))
    r = CliRunner().invoke(app, ["sim", "--geo", "--json", *args])
    return r.exit_code, json.loads(stdout.getvalue())


def test_cli_prints_json_and_writes_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "B.md"
    code, report = invoke_json(monkeypatch, ["--users", "80", "--days", "2", "--output", str(out)])
    assert code == (0 if report["goal_met"] else 1)
    assert set(report["policies"]) == {*POLICIES, IDEAL}
    assert "## Geo simulation (`cloche sim --geo`)" in out.read_text()


def test_cli_follow_rule_can_be_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloche.cli import app

    _, report = invoke_json(
        monkeypatch, ["--users", "40", "--days", "1", "--follow", "min_requests=20, cooldown_s=600"]
    )
    assert (report["rule"]["min_requests"], report["rule"]["cooldown_s"]) == (20, 600.0)
    bad = CliRunner().invoke(app, ["sim", "--geo", "--follow", "patience=3"])
    assert bad.exit_code == 2 and "patience" in bad.output


def test_an_agent_failed_over_follows_its_user_rather_than_returning_to_where_it_was() -> None:
    """A traveller's agent followed them to eu-west-1, which then went down (failover);
    back home after the outage, the next wake takes the agent home, not to eu-west-1."""
    from cloche.geo.sim.regions import GeoMap
    from cloche.geo.sim.replay import Replay
    from cloche.geo.sim.trace import Outage, Request, Trace

    hour = 3600.0
    requests = [Request(0.0, 0, "us-east-1", True), Request(10 * hour, 0, "eu-west-1", True),
                Request(12 * hour, 0, "eu-west-1", True), Request(20 * hour, 0, "us-east-1", True),
                Request(20 * hour + 30, 0, "us-east-1", False)]  # fmt: skip
    trace = Trace(["us-east-1"], [100.0], [10.0], requests, [Outage("eu-west-1", 11 * hour, 13 * hour)])
    out = Replay("cloche", trace, GeoMap.published(), GeoConfig(), FollowRule(), "us-east-1").run()
    assert [region for _, region in out.placements] == ["us-east-1", "eu-west-1", "eu-central-1", "us-east-1"]
    assert (out.follows, out.failovers, out.failbacks) == (2, 1, 0)
    assert out.latencies_ms[-1] == 10.0 + 1.0  # last mile + inside the region
