"""``cloche sim --geo``: the geo simulator's command line (the simulator is
:mod:`cloche.geo.sim`): one trace, the policies side by side, a rich table or JSON, and
optionally its section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import typer

from cloche.cli import ui


def run_geo(users: int, days: float, seed: int, travel: float, outages: int, as_json: bool, target: Path | None,
            command: str) -> None:  # fmt: skip
    from cloche.geo.follow import FollowRule
    from cloche.geo.sim import GeoConfig, simulate
    from cloche.geo.sim.report import MARK, describe, markdown, rich_table, summarize, verdict
    from cloche.geo.sim.report import as_json as to_json
    from cloche.scheduler.sim.report import write_section

    cfg = GeoConfig(users=users, days=days, seed=seed, travel_per_day=travel, outages=outages)
    rule = FollowRule()
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
