"""``cloche sim --geo``: the geo simulator's command line (the simulator is
:mod:`cloche.geo.sim`): one trace, the policies side by side, a rich table or JSON, and
optionally its section of BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from cloche.cli import ui
from cloche.geo.follow import FollowRule


def parse_rule(spec: str) -> FollowRule:
    """`window_s=3600,min_requests=20`: the FollowRule defaults with those fields changed."""
    defaults = dataclasses.asdict(FollowRule())
    changes: dict[str, float | int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = (part.strip() for part in item.partition("="))
        if name not in defaults:
            raise typer.BadParameter(
                f"unknown field {name!r}; choose from {', '.join(defaults)}", param_hint="--follow"
            )
        changes[name] = type(defaults[name])(value)
    return FollowRule(**changes)  # type: ignore[arg-type]


def run_geo(users: int, days: float, seed: int, travel: float, outages: int, follow: str, as_json: bool,
            target: Path | None, command: str) -> None:  # fmt: skip
    from cloche.geo.sim import GeoConfig, simulate
    from cloche.geo.sim.report import MARK, describe, markdown, rich_table, summarize, verdict
    from cloche.geo.sim.report import as_json as to_json
    from cloche.scheduler.sim.report import write_section

    cfg = GeoConfig(users=users, days=days, seed=seed, travel_per_day=travel, outages=outages)
    rule = parse_rule(follow)
    with ui.spinner(f"simulating {users:,} users over {days:g} days"):
        run = simulate(cfg, rule)
        rows = summarize(run.outcomes, cfg)
    text = describe(cfg, rule, run.trace, sorted({*run.trace.homes}), run.home)
    if as_json:
        ui.print_json(to_json(rows, cfg, rule))
    else:
        ui.out.print(rich_table(rows))
        ok, why = verdict(rows)
        ui.out.print(f"[{'green' if ok else 'red'}]{'met' if ok else 'not met'}:[/] {why}", highlight=False)
    if target is not None:
        write_section(target, markdown(rows, text, command), MARK)
        ui.err.print(f"wrote the `{MARK}` section of {target}", highlight=False)
    if not verdict(rows)[0]:
        raise typer.Exit(1)
