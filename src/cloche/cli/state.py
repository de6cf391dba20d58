"""``cloche state``: the durable state of a namespace from the shell: the versioned KV
(get, put, rm, ls), the append-only log (append, read, trim) and grants to sandboxes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect, piped_stdin, read_local
from cloche.client.models import LogEntry

app = typer.Typer(help="Durable state: a versioned KV and an append-only log per namespace.", no_args_is_help=True)


Namespace = Annotated[str, typer.Argument(help="State namespace (a sandbox id is its own).", show_default=False)]
StateKey = Annotated[str, typer.Argument(help="Key.", show_default=False)]


def _value(value: str | None, file: Path | None, what: str) -> bytes:
    """The bytes to store: the argument, --file, or stdin (for '-' or when piped)."""
    if file is not None:
        if value is not None:
            raise typer.BadParameter(f"give either {what} or --file", param_hint="--file")
        return read_local(file, "--file")
    if value == "-" or (value is None and piped_stdin()):
        return sys.stdin.buffer.read()
    if value is None:
        raise typer.BadParameter(f"give {what}, --file, or pipe it on stdin", param_hint=what)
    return value.encode()


@app.command("get")
def state_get(
    namespace: Namespace,
    key: StateKey,
    show_version: Annotated[bool, typer.Option("--show-version", "-v", help="Print the version on stderr.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print a key's value (exit 1 if it does not exist)."""
    with connect(url, api_key) as client:
        item = client.state(namespace).get(key)
    if item is None:
        ui.err.print(f"[red]error:[/] key {key!r} not found in {namespace!r}", highlight=False)
        raise typer.Exit(1)
    sys.stdout.buffer.write(item.value)
    sys.stdout.buffer.flush()
    if show_version:
        ui.err.print(f"version {item.version}", highlight=False)


@app.command("put")
def state_put(
    namespace: Namespace,
    key: StateKey,
    value: Annotated[str | None, typer.Argument(help="The value; - or none: stdin.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the value from this file.")] = None,
    if_match: Annotated[int | None, typer.Option("--if-match", help="Only if the key is at this version.")] = None,
    if_none_match: Annotated[bool, typer.Option("--if-none-match", help="Only if the key does not exist.")] = False,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Expire the key after this many seconds.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Store a value and print its new version (exit 1 if a condition fails)."""
    data = _value(value, file, "VALUE")
    with connect(url, api_key) as client:
        version = client.state(namespace).put(key, data, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl)
    ui.out.print(str(version), highlight=False)


@app.command("rm")
def state_rm(
    namespace: Namespace,
    key: StateKey,
    if_match: Annotated[int | None, typer.Option("--if-match", help="Only if the key is at this version.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete a key (no error if it does not exist, unless --if-match is given)."""
    with connect(url, api_key) as client:
        client.state(namespace).delete(key, if_match=if_match)


app.command("del", hidden=True)(state_rm)


@app.command("ls")
def state_ls(
    namespace: Namespace,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List the live keys of a namespace (all pages)."""
    with connect(url, api_key) as client:
        keys = list(client.state(namespace).list(prefix, page_size=1000))
    if as_json:
        ui.print_json(keys)
        return
    if not keys:
        ui.err.print("no keys")
        return
    table = ui.table("KEY", "VERSION", "SIZE", right=["VERSION", "SIZE"])
    for k in keys:
        table.add_row(k.key, str(k.version), ui.size(k.size))
    ui.out.print(table, highlight=False)


@app.command("append")
def state_append(
    namespace: Namespace,
    data: Annotated[str | None, typer.Argument(help="The entry; - or none: stdin.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the entry from this file.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", "-k", help="A retry with the same key adds nothing.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Append an entry to the namespace's log and print its sequence number."""
    entry = _value(data, file, "DATA")
    with connect(url, api_key) as client:
        seq = client.state(namespace).append(entry, idempotency_key=idempotency_key)
    ui.out.print(str(seq), highlight=False)


@app.command("read")
def state_read(
    namespace: Namespace,
    after: Annotated[int, typer.Option("--after", help="Entries with a sequence number above this.")] = 0,
    limit: Annotated[int, typer.Option("--limit", help="Most entries to print (without --follow).")] = 100,
    wait: Annotated[float, typer.Option("--wait", help="Wait up to this long for a new entry.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new entries.")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print log entries as SEQ<TAB>DATA lines (--json: one JSON object per line)."""

    def emit(entry: LogEntry) -> None:
        if as_json:
            text = entry.data.decode(errors="replace")
            sys.stdout.write(json.dumps({"seq": entry.seq, "data": text}) + "\n")
        else:
            sys.stdout.buffer.write(b"%d\t%s\n" % (entry.seq, entry.data))
        sys.stdout.flush()

    with connect(url, api_key) as client:
        log = client.state(namespace)
        if follow:
            try:
                for entry in log.follow(after):
                    emit(entry)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        page = log.wait(after, wait, limit) if wait > 0 else log.read(after, limit)
        for entry in page.items:
            emit(entry)


@app.command("trim")
def state_trim(
    namespace: Namespace,
    upto: Annotated[int, typer.Argument(help="Drop entries up to this sequence number.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Drop log entries up to UPTO and print the oldest sequence number kept."""
    with connect(url, api_key) as client:
        first = client.state(namespace).trim(upto)
    ui.out.print(str(first), highlight=False)


@app.command("grant")
def state_grant(namespace: Namespace, sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Let one of your sandboxes use the namespace from inside (cloche-state -n NS)."""
    with connect(url, api_key) as client:
        client.state(namespace).grant(sandbox_id)


@app.command("revoke")
def state_revoke(namespace: Namespace, sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Withdraw a grant."""
    with connect(url, api_key) as client:
        client.state(namespace).revoke(sandbox_id)


@app.command("grants")
def state_grants(namespace: Namespace, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List the sandboxes granted the namespace."""
    with connect(url, api_key) as client:
        for sandbox_id in client.state(namespace).grants():
            ui.out.print(sandbox_id, highlight=False)
