"""``cloche demo``: the memo agent driven by simulated users, to show create, talk,
sleep and wake end to end against a live server (the work is in :mod:`cloche.demo`)."""

from __future__ import annotations

from typing import Annotated

import typer

from cloche.cli import ui
from cloche.cli.options import KeyOpt, UrlOpt

app = typer.Typer()


@app.command()
def demo(
    users: Annotated[int, typer.Option("--users", "-n", min=1, help="Simulated users, driven concurrently.")] = 20,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=0, help="Talk / sleep / wake rounds per user.")] = 3,
    idle: Annotated[
        float | None,
        typer.Option(
            "--idle",
            help="Sleep by going idle S seconds (the idle policy pauses after S/3 and "
            "hibernates after 2S/3) instead of through the API.",
        ),
    ] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="App name (default: a fresh one).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the app and its agents afterwards.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Deploy the memo agent and drive N users through create, talk, sleep and wake.

    Prints invoke latencies per phase and whether every user's memory survived; exits
    1 if any was lost or any user failed.
    """
    import asyncio

    from cloche.demo import report, run_demo

    def log(line: str) -> None:
        ui.err.print(line, highlight=False)

    result = asyncio.run(
        run_demo(url, api_key, users=users, rounds=rounds, idle=idle, app=app_name, keep=keep, console=ui.err, log=log)
    )
    report(result, ui.out)
    if not result.ok:
        raise typer.Exit(1)
