"""``cloche snapshot``: named snapshots of sandboxes' files, to start new sandboxes from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect
from cloche.client.models import SnapshotInfo

app = typer.Typer(help="Named snapshots of sandboxes' files.", no_args_is_help=True)


def _snapshot_table(snapshots: list[SnapshotInfo]) -> Table:
    table = ui.table("ID", "NAME", "SANDBOX", "TEMPLATE", "SIZE", "CREATED")
    for s in snapshots:
        table.add_row(s.id, s.name, s.sandbox_id, s.template or "-", ui.size(s.bytes), ui.when(s.created_at))
    return table


@app.command("create")
def snapshot_create(
    sandbox_id: SandboxId,
    name: Annotated[str, typer.Argument(help="Snapshot name (unique per tenant).", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Save a sandbox's current files as a named snapshot; print its id.

    Start sandboxes from it with `cloche sandbox create --snapshot ID`.
    """
    with connect(url, api_key) as client, ui.spinner("Snapshotting…"):
        snap = client.snapshots.create(sandbox_id, name)
    ui.created(snap, snap.id, as_json)


@app.command("ls")
def snapshot_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your snapshots."""
    with connect(url, api_key) as client:
        snapshots = client.snapshots.list()
    ui.show(snapshots, as_json, _snapshot_table, empty="no snapshots")


@app.command("get")
def snapshot_get(
    snapshot_id: Annotated[str, typer.Argument(help="Snapshot id.", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show one snapshot."""
    with connect(url, api_key) as client:
        snap = client.snapshots.get(snapshot_id)
    ui.show(snap, as_json, lambda one: _snapshot_table([one]))


@app.command("rm")
def snapshot_rm(
    snapshot_ids: Annotated[list[str], typer.Argument(help="Snapshot id(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete snapshots (sandboxes created from them keep their files)."""
    with connect(url, api_key) as client:
        for snapshot_id in snapshot_ids:
            client.snapshots.delete(snapshot_id)
            ui.err.print(f"deleted {snapshot_id}", highlight=False)
