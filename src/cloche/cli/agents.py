"""``cloche agent``: invoke an app's per-key agent (streaming its answer), list, show,
move (to another region of a cluster) and remove agents.  Apps are deployed with :mod:`cloche.cli.apps`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect, piped_stdin, read_local
from cloche.client.models import AgentInfo, AgentMove

app = typer.Typer(help="Invoke, list, move and remove an app's per-key agents.", no_args_is_help=True)


AppArg = Annotated[str, typer.Argument(help="App name.", show_default=False)]
AgentKey = Annotated[str, typer.Argument(help="Agent key (one per user).", show_default=False)]


def _agent_table(agents: list[AgentInfo]) -> Table:
    table = ui.table("KEY", "STATE", "SANDBOX", "VERSION", "LAST ACTIVITY", "CREATED")
    for a in agents:
        table.add_row(
            a.key,
            ui.styled_state(a.state),
            a.sandbox_id,
            str(a.app_version),
            ui.when(a.last_active_at),
            ui.when(a.created_at),
        )
    return table


def _invoke_body(data: str | None, message: str | None) -> tuple[bytes | None, str | None]:
    """The request body and its content type from -d / -m / stdin (None: no body)."""
    if message is not None:
        if data is not None:
            raise typer.BadParameter("give either --data or --message", param_hint="--data")
        return json.dumps({"message": message}).encode(), "application/json"
    if data is None:
        body = sys.stdin.buffer.read() if piped_stdin() else None
    elif data in ("-", "@-"):
        body = sys.stdin.buffer.read()
    elif data.startswith("@"):
        body = read_local(data[1:], "--data")
    else:
        body = data.encode()
    if body is None:
        return None, None
    try:
        json.loads(body)
    except ValueError:
        return body, "application/octet-stream"
    return body, "application/json"


@app.command(
    "invoke",
    epilog="Examples: cloche agent invoke memo alice -m 'remember I like tea'  |  "
    "cloche agent invoke memo alice -d '{\"message\": \"recall\"}'  |  echo '{...}' | cloche agent invoke memo alice",
)
def agent_invoke(
    app_name: AppArg,
    key: AgentKey,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Request body: text/JSON, @FILE, or - for stdin (default: piped stdin)."),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help='Send {"message": TEXT} (the memo agent\'s format).')
    ] = None,
    path: Annotated[str, typer.Option("--path", help="Path below the agent's root.")] = "",
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.")] = "POST",
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value' header for the agent (repeatable).")
    ] = None,
    include: Annotated[
        bool, typer.Option("--include", "-i", help="Print the agent's status and headers (to stderr).")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the answer.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Send a request to the KEY's agent of APP (created or woken as needed) and print
    its answer as it streams.

    Exits 0 if the agent answered 2xx, 1 otherwise.
    """
    body, content_type = _invoke_body(data, message)
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected 'Name: value', got {item!r}", param_hint="--header")
        headers[name.strip()] = value.strip()
    with connect(url, api_key) as client:
        agent = client.agents(app_name)[key]
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        with agent.invoke_stream(body or b"", path=path, method=method, headers=headers, **kwargs) as stream:
            status = stream.status_code
            if include:
                ui.err.print(f"HTTP {status}", highlight=False)
                for name, value in stream.headers.items():
                    ui.err.print(f"{name}: {value}", highlight=False)
            last = b"\n"
            for chunk in stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                last = chunk or last
    if sys.stdout.isatty() and not last.endswith(b"\n"):
        sys.stdout.write("\n")
    if not 200 <= status < 300:
        ui.err.print(f"[red]error:[/] the agent answered HTTP {status}", highlight=False)
        raise typer.Exit(1)


@app.command("ls")
def agent_ls(app_name: AppArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List an app's agents: key, state, sandbox, version and last activity."""
    with connect(url, api_key) as client:
        agents = client.agents(app_name).list()
    empty = f"no agents yet; the first `cloche agent invoke {app_name} KEY` creates one"
    ui.show(agents, as_json, _agent_table, empty=empty)


@app.command("get")
def agent_get(
    app_name: AppArg, key: AgentKey, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Show one agent."""
    with connect(url, api_key) as client:
        info = client.agents(app_name)[key].info()
    ui.show(info, as_json, lambda one: _agent_table([one]))


@app.command("rm")
def agent_rm(
    app_name: AppArg,
    key: AgentKey,
    state: Annotated[bool, typer.Option("--state", help="Also delete the agent's state.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Remove an agent's instance (its next invocation starts afresh)."""
    with connect(url, api_key) as client:
        client.agents(app_name)[key].delete(state=state)
    ui.err.print(f"deleted {app_name}/{key}", highlight=False)


@app.command("move", epilog="Example: cloche agent move memo alice --region eu")
def agent_move(
    app_name: AppArg,
    key: AgentKey,
    region: Annotated[str, typer.Option("--region", help="The region to move it to.", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Move an agent to another region of a cluster, its files and state with it."""
    with connect(url, api_key) as client:
        moved = client.agents(app_name)[key].move(region)

    def view(m: AgentMove) -> str:
        return (f"{app_name}/{key}: {m.source or '?'} -> {m.region} (node {m.node}) in {m.seconds:.2f} s, "
                f"{m.bytes_copied} bytes copied")  # fmt: skip

    ui.show(moved, as_json, view)
