"""``cloche app``: deploy apps (one agent per key, created on first invocation), list,
show and delete them.  The agents themselves are :mod:`cloche.cli.agents`."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect, idle_policy, pairs
from cloche.client.models import App

app = typer.Typer(help="Deploy apps: one agent per key, created on first invocation.", no_args_is_help=True)


EXAMPLES = ("memo",)
"""Example agents ``cloche app deploy NAME --example`` knows."""


def _app_table(apps: list[App]) -> Table:
    table = ui.table("NAME", "VERSION", "COMMAND", "TEMPLATE", "IDLE", "UPDATED")
    for a in apps:
        command = shlex.join(a.spec.command)
        table.add_row(
            a.name,
            str(a.version),
            command if len(command) <= 60 else command[:57] + "...",
            a.spec.template or "-",
            ui.idle_text(a.spec.idle),
            ui.when(a.updated_at),
        )
    return table


def _app_detail(a: App) -> Table:
    spec = a.spec
    setup = spec.setup if isinstance(spec.setup, str) or spec.setup is None else shlex.join(spec.setup)
    rows: list[tuple[str, str]] = [
        ("name", a.name),
        ("version", str(a.version)),
        ("command", shlex.join(spec.command)),
        ("template", spec.template or "-"),
        ("setup", "-" if setup is None else setup if len(setup) <= 100 else f"{setup[:97]}..."),
        ("idle", ui.idle_text(spec.idle)),
        ("max concurrency", str(spec.max_concurrency)),
        ("startup timeout", f"{spec.startup_timeout_s:g}s"),
        ("cpu", ui.cores(spec.cpu)),
        ("memory", ui.mib(spec.memory_mb)),
        ("updated", ui.when(a.updated_at)),
    ]
    rows += [(f"env.{k}", v) for k, v in sorted(spec.env.items())]
    return ui.details(rows)


@app.command("deploy", epilog="Example: cloche app deploy memo --example memo")
def app_deploy(
    name: Annotated[str, typer.Argument(help="App name (lowercase letters, digits, -).", show_default=False)],
    command: Annotated[
        str | None,
        typer.Option(
            "--command", "-c", help="The agent's server, a command line; it must serve HTTP on $CLOCHE_AGENT_SOCKET."
        ),
    ] = None,
    example: Annotated[
        str | None, typer.Option("--example", help=f"Deploy a bundled example agent: {', '.join(EXAMPLES)}.")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Template of the agents' sandboxes.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the agents (repeatable).")] = None,
    setup: Annotated[str | None, typer.Option("--setup", help="Shell command run once in each new instance.")] = None,
    idle_pause: Annotated[
        float | None, typer.Option("--idle-pause", help="Pause an agent after this many idle seconds.")
    ] = None,
    idle_hibernate: Annotated[
        float | None, typer.Option("--idle-hibernate", help="Hibernate an agent after this many idle seconds.")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", help="Invocations delivered at once to one agent.")
    ] = None,
    startup_timeout: Annotated[
        float | None, typer.Option("--startup-timeout", help="Seconds to wait for the agent's socket.")
    ] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per agent.")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory per agent in MiB.")] = None,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="Data residency: the agents run only in this region (repeatable; cluster)."),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Deploy an app (or redeploy it as a new version).

    Each key gets its own agent, a sandbox running the command, created on its first
    invocation (`cloche agent invoke APP KEY`).
    """
    if (command is None) == (example is None):
        raise typer.BadParameter("give either --command or --example", param_hint="--command")
    spec: dict[str, Any] = {}
    if example is not None:
        if example not in EXAMPLES:
            raise typer.BadParameter(f"unknown example {example!r}; known: {', '.join(EXAMPLES)}")
        from cloche.examples import memo_app

        spec = memo_app(**({"template": template} if template else {}))
    else:
        argv = shlex.split(command or "")
        if not argv:
            raise typer.BadParameter("the command is empty", param_hint="--command")
        spec = {"command": argv, "template": template}
    env_vars = pairs(env, "--env")
    if env_vars:
        spec["env"] = {**spec.get("env", {}), **env_vars}
    if setup is not None:
        spec["setup"] = setup
    idle = idle_policy(idle_pause, idle_hibernate)
    if idle is not None:
        spec["idle"] = idle
    extra = {
        "max_concurrency": max_concurrency,
        "startup_timeout_s": startup_timeout,
        "cpu": cpu,
        "memory_mb": memory_mb,
        "regions": region or None,
    }
    spec.update({k: v for k, v in extra.items() if v is not None})
    with connect(url, api_key) as client:
        deployed = client.apps.deploy(name, **spec)
    if as_json:
        ui.print_json(deployed)
    else:
        ui.out.print(f"{deployed.name} version {deployed.version}", highlight=False)
        ui.err.print(f"[dim]try: cloche agent invoke {deployed.name} alice -m hello[/]", highlight=False)


@app.command("ls")
def app_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your apps."""
    with connect(url, api_key) as client:
        apps = client.apps.list()
    ui.show(apps, as_json, _app_table, empty="no apps")


@app.command("get")
def app_get(
    name: Annotated[str, typer.Argument(help="App name.", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show one app and its spec."""
    with connect(url, api_key) as client:
        deployed = client.apps.get(name)
    ui.show(deployed, as_json, _app_detail)


@app.command("rm")
def app_rm(
    name: Annotated[str, typer.Argument(help="App name.", show_default=False)],
    state: Annotated[bool, typer.Option("--state", help="Also delete every agent's state.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete an app and all its agents' sandboxes."""
    with connect(url, api_key) as client, ui.spinner(f"Deleting {name}…"):
        client.apps.delete(name, state=state)
    ui.err.print(f"deleted {name}", highlight=False)
