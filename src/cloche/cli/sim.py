"""``cloche sim``: compare placement policies offline, driving the real scheduler code
(the simulator is :mod:`cloche.scheduler.sim`; this is its command line)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui

app = typer.Typer()


@app.command("sim")
def sim_command(
    nodes: Annotated[int, typer.Option(help="Simulated nodes, spread over the regions.")] = 24,
    hours: Annotated[float, typer.Option(help="Simulated hours.")] = 6.0,
    load: Annotated[float, typer.Option(help="Offered concurrency / the cluster's capacity without overcommit.")] = 3.0,
    policies: Annotated[str, typer.Option(help="Policies to compare (cloche-no-overcommit: an ablation).")] = (
        "random,first-fit,kubernetes,cloche,cloche-no-overcommit"),
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 1,
    wait_s: Annotated[float, typer.Option("--wait-s", help="How long a create may queue.")] = 30.0,
    trace: Annotated[Path | None, typer.Option(help="Replay this JSON-lines trace instead.")] = None,
    save_trace: Annotated[Path | None, typer.Option("--save-trace", help="Write the workload as a trace.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Markdown file whose `cloche sim` section is written (implies --write).")] = None,
    write: Annotated[bool, typer.Option("--write/--no-write",
                                        help="Write the section into --output (default BENCHMARKS.md).")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw admission rate, queue wait and latency to this PNG.")] = None,
    geo: Annotated[bool, typer.Option("--geo", help="Simulate regions instead: travelling users, outages, "
                                      "follow-the-user against home-region and nearest-static placement.")] = False,
    users: Annotated[int, typer.Option(help="--geo: simulated users (one agent each).")] = 2000,
    days: Annotated[float, typer.Option(help="--geo: simulated days.")] = 7.0,
    travel: Annotated[float, typer.Option(help="--geo: chance per day that a user at home leaves on a trip.")] = 0.03,
    outages: Annotated[int, typer.Option(help="--geo: whole-region outages over the run.")] = 2,
    follow: Annotated[str, typer.Option(help="--geo: change the follow rule, e.g. `min_requests=20,window_s=3600` "
                                        "(fields of cloche.geo.follow.FollowRule; default: its defaults).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="--geo: print JSON instead of the table.")] = False,
) -> None:  # fmt: skip
    """Simulate placement policies side by side with the real scheduler code (random,
    first-fit, Kubernetes-default-like, cloche) and print the comparison table; with
    --geo, simulate agents following their users across real cloud regions."""
    command = " ".join(["cloche", "sim", *sys.argv[2:]]) if len(sys.argv) > 1 else "cloche sim"
    target = (output or Path("BENCHMARKS.md")) if write or output else None
    if geo:
        from cloche.cli.simgeo import run_geo

        run_geo(users, days, seed, travel, outages, follow, as_json, target, command)
        return
    from cloche.scheduler import sim

    cfg = sim.SimConfig(nodes=nodes, hours=hours, load=load, seed=seed, wait_s=wait_s)
    with ui.spinner(f"simulating {hours:g} h on {nodes} nodes"):
        results, section, ok = sim.run(cfg, [p.strip() for p in policies.split(",") if p.strip()], trace,
                                       save_trace, target, command)  # fmt: skip
    ui.out.print(section, markup=False, highlight=False, soft_wrap=True)
    if target is not None:
        ui.err.print(f"wrote the `cloche sim` section of {target}", highlight=False)
    if plot is not None:
        from cloche.scheduler.sim.plot import PlotUnavailable, draw

        try:
            draw(results, plot, f"{hours:g} h on {nodes} nodes at load {load:g}, seed {seed}")
        except PlotUnavailable as exc:
            ui.err.print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from exc
        ui.err.print(f"drew {plot}", highlight=False)
    if not ok:
        raise typer.Exit(1)
