"""``cloche secret``: store, list and delete the secrets sandboxes send as
``${secret:NAME}`` without holding them, and rotate their encryption key (admin).
Values are read from a file, stdin or a hidden prompt, never printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect, read_local
from cloche.client.models import SecretInfo

app = typer.Typer(
    help="Secrets: values sandboxes send as ${secret:NAME} in network.rules headers without ever holding them.",
    no_args_is_help=True,
)


def _secret_table(secrets: list[SecretInfo]) -> Table:
    table = ui.table("NAME", "HOSTS", "CREATED", "UPDATED")
    for s in secrets:
        table.add_row(s.name, ", ".join(s.hosts), ui.when(s.created_at), ui.when(s.updated_at))
    return table


def _one_line(text: str) -> str:
    """A value read from a file or a pipe, without the newline that ends its last line."""
    return text.removesuffix("\n").removesuffix("\r")


def _secret_value(value: str | None, value_file: Path | None) -> str:
    if value is not None and value_file is not None:
        ui.err.print("[red]error:[/] give --value or --value-file, not both")
        raise typer.Exit(2)
    if value is not None:
        ui.err.print("[yellow]warning:[/] --value leaves the secret in your shell history and the process list; "
                     "prefer --value-file or stdin")  # fmt: skip
        return value
    if value_file is not None:
        if str(value_file) == "-":
            return _one_line(sys.stdin.read())
        try:
            return _one_line(read_local(value_file, "--value-file").decode())
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{value_file} is not UTF-8 text", param_hint="--value-file") from None
    if not sys.stdin.isatty():
        return _one_line(sys.stdin.read())
    return typer.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)


@app.command("add", epilog="Example: cloche secret add gh_token --host api.github.com < token.txt")
def secret_add(
    name: Annotated[str, typer.Argument(help="Secret name, used as ${secret:NAME}.", show_default=False)],
    hosts: Annotated[
        list[str],
        typer.Option(
            "--host", help="Host name or *.wildcard the value may be sent to (repeat for more).", show_default=False
        ),
    ],
    value_file: Annotated[
        Path | None,
        typer.Option("--value-file", help="Read the value from this file ('-': stdin).", show_default=False),
    ] = None,
    value: Annotated[
        str | None, typer.Option("--value", help="The value itself (discouraged: shell history).", show_default=False)
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the value and hosts if the secret exists.")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Store a secret, encrypted; it is never shown again.

    The value comes from --value-file, else from stdin (when not a terminal), else from a hidden prompt.
    One line, at most 8 KiB; a final newline is dropped.
    """
    secret = _secret_value(value, value_file)
    with connect(url, api_key) as client:
        info = client.secrets.update(name, secret, hosts) if replace else client.secrets.create(name, secret, hosts)
    if as_json:
        ui.print_json(info)
    else:
        ui.err.print(f"stored {info.name} (sent only to {', '.join(info.hosts)})", highlight=False)


@app.command("list")
def secret_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your secrets: names and hosts (values are never returned)."""
    with connect(url, api_key) as client:
        secrets = client.secrets.list()
    ui.show(secrets, as_json, _secret_table, empty="no secrets")


app.command("ls", hidden=True)(secret_list)


@app.command("rm")
def secret_rm(
    names: Annotated[list[str], typer.Argument(help="Secret name(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete secrets; sandbox requests that use them are refused from then on."""
    with connect(url, api_key) as client:
        for name in names:
            client.secrets.delete(name)
            ui.err.print(f"deleted {name}", highlight=False)


@app.command("rotate-key")
def secret_rotate_key(
    drop_old: Annotated[
        bool,
        typer.Option("--drop-old", help="Then remove the old keys from the key file (backups taken before need them)."),
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Admin: encrypt every secret under a new key, first in the server's key file.

    Old keys stay in the file (so nothing is ever unreadable, even after a crash) unless
    --drop-old, which removes them once every secret is re-encrypted.
    """
    with connect(url, api_key) as client:
        done = client.secrets.rotate_key(drop_old)
    if as_json:
        ui.print_json(done)
    else:
        ui.err.print(f"re-encrypted {done.secrets} secret(s); {done.keys} key(s) in the key file, "
                     f"{done.dropped} dropped", highlight=False)  # fmt: skip
