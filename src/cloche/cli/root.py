"""The ``cloche`` command itself: the root Typer app with ``--version``, every command
group mounted under its name, and :func:`main`, the console-script entry point.

The order of the mounts is the order ``cloche --help`` lists them in.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
import typer.main
from typer.models import TyperInfo

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

# The command groups, in the order `cloche --help` lists them. Each becomes a click group
# only when it is used (one of its commands runs, or a help lists it): building all ~70
# commands for every run cost a CLI call about as much CPU as the command itself.
GROUPS: dict[str, typer.Typer] = {
    "sandbox": sandboxes.app,
    "files": files.app,
    "tenant": tenants.app,
    "node": nodes.app,
    "template": templates.app,
    "network": network.app,
    "snapshot": snapshots.app,
    "app": apps.app,
    "agent": agents.app,
    "state": state.app,
    "secret": secrets.app,
    "db": db.app,
    "cluster": cluster.app,
}


class Root(errors.Group):
    """The root group: the top-level commands, and each of `GROUPS` built on first use."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in GROUPS if name not in self.commands)]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            self.add_command(
                typer.main.get_group_from_info(
                    TyperInfo(GROUPS[cmd_name], name=cmd_name),
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    suggest_commands=app.suggest_commands,
                    rich_markup_mode=app.rich_markup_mode,
                ),
                cmd_name,
            )
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and args[0] not in GROUPS:
            for name in GROUPS:  # no such command: Typer suggests the closest of every name
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="cloche",
    cls=Root,
    help="Cloche: isolated, durable, per-user sandboxes for AI agents.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
for commands in (server.app, ports.app, demo.app, run.app, sim.app):
    app.add_typer(commands)
nodes.app.add_typer(node_agent.app)  # `cloche node run|rotate` beside ls and gc


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
