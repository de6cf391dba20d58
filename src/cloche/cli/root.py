"""The ``cloche`` command itself: the root Typer app with ``--version``, every command
group mounted under its name, and :func:`main`, the console-script entry point.

The order of the mounts is the order ``cloche --help`` lists them in.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cloche import __version__
from cloche.cli import (
    agents,
    apps,
    cluster,
    db,
    demo,
    errors,
    files,
    network,
    node_agent,
    nodes,
    ports,
    run,
    sandboxes,
    secrets,
    server,
    sim,
    snapshots,
    state,
    templates,
    tenants,
    ui,
)

app = typer.Typer(
    name="cloche",
    cls=errors.Group,
    help="Cloche: isolated, durable, per-user sandboxes for AI agents.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
for commands in (server.app, ports.app, demo.app, run.app, sim.app):
    app.add_typer(commands)
nodes.app.add_typer(node_agent.app)  # `cloche node run|rotate` beside ls and gc
for name, group in (
    ("sandbox", sandboxes.app),
    ("files", files.app),
    ("tenant", tenants.app),
    ("node", nodes.app),
    ("template", templates.app),
    ("network", network.app),
    ("snapshot", snapshots.app),
    ("app", apps.app),
    ("agent", agents.app),
    ("state", state.app),
    ("secret", secrets.app),
    ("db", db.app),
    ("cluster", cluster.app),
):
    app.add_typer(group, name=name)


def _version(value: bool) -> None:
    if value:
        ui.out.print(f"cloche {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Cloche: isolated, durable, per-user sandboxes for AI agents.

    Point the CLI at a server with CLOCHE_URL and CLOCHE_API_KEY (or --url/--api-key).
    """


def main() -> None:
    """Console-script entry point: run the CLI (API errors become short messages in
    :mod:`cloche.cli.errors`)."""
    try:
        app()
    except BrokenPipeError:
        # The reader went away (e.g. `cloche files get ... | head`): exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
