"""``cloche node``: list worker nodes (admin key), and ``node gc``, which runs on a host
as root and removes what vanished nodes left behind (the work is in
:mod:`cloche.node.orphans`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect
from cloche.client.models import NodeInfo

app = typer.Typer(help="Inspect worker nodes (admin key required); clean up after vanished ones.",
                  no_args_is_help=True)  # fmt: skip


def _node_table(nodes: list[NodeInfo]) -> Table:
    """Nodes with their allocation against capacity and their warm pools."""
    table = ui.table("ID", "STATE", "CPU", "MEMORY", "SANDBOXES", "POOLS")
    for n in nodes:
        pools = ", ".join(f"{p.template} {p.ready}/{p.size}" for p in n.pools) or "-"
        table.add_row(
            n.id,
            n.state,
            f"{n.allocated.cpu:g}/{n.capacity.cpu:g}",
            f"{n.allocated.memory_mb}/{n.capacity.memory_mb} MiB",
            str(n.sandboxes),
            pools,
        )
    return table


@app.command("ls")
def node_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List worker nodes with capacity, allocation and warm pools."""
    with connect(url, api_key) as client:
        nodes = client.nodes.list()
    ui.show(nodes, as_json, _node_table)


@app.command("gc", epilog="Example: sudo cloche node gc --dry-run")
def node_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; change nothing.")] = False,
    force_unknown: Annotated[
        bool, typer.Option("--force-unknown", help="Also remove nodes with no owner file (whose owner is unknown).")
    ] = False,
    run_root: Annotated[Path, typer.Option("--run-root", help="Where nodes keep their runtime state.")] = Path(
        "/run/cloche"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Remove the containers, mounts, cgroups, links, nft tables and claims of vanished nodes (root).

    A node is gone when its owner file names a data dir that no longer exists, or it has no runtime dir.
    """
    from cloche.node import orphans

    if os.geteuid() != 0:
        ui.err.print("[red]error:[/] cloche node gc needs root")
        raise typer.Exit(1)
    found = orphans.find_orphans(run_root)
    done: list[tuple[orphans.Orphan, str]] = []
    if dry_run:
        done = [(o, "kept (unknown owner)" if o.unknown_owner and not force_unknown else "would remove")
                for o in found]  # fmt: skip
        failures: list[orphans.Failure] = []
    else:
        failures = orphans.remove(found, run_root=run_root, force_unknown=force_unknown,
                                  on_done=lambda o, action: done.append((o, action)))  # fmt: skip
        orphans.drop_ownerless_claims(run_root)
    if as_json:
        ui.print_json([{**o.to_json(), "action": action} for o, action in done])
    elif done:
        table = ui.table("KIND", "NAME", "NODE", "ACTION", "WHY")
        for o, action in done:
            style = "red" if action.startswith("FAILED") else "dim" if action.startswith("kept") else ""
            table.add_row(o.kind, o.name, o.key, f"[{style}]{action}[/]" if style else action, o.reason)
        ui.out.print(table, highlight=False)
    _gc_summary(done, failures, dry_run, force_unknown)
    if failures:
        raise typer.Exit(1)


def _gc_summary(done: list[tuple[Any, str]], failures: list[Any], dry_run: bool, force_unknown: bool) -> None:
    kept = sum(1 for _, action in done if action.startswith("kept"))
    gone = sum(1 for _, action in done if action == "already gone")
    acted = [o for o, action in done if not action.startswith(("kept", "FAILED", "already"))]
    nodes = len({o.key for o, action in done if not action.startswith("kept")})
    if not done:
        ui.err.print("nothing to collect: no node on this host lost its data directory", highlight=False)
    elif dry_run:
        ui.err.print(f"dry run: {len(acted)} object(s) of {nodes} node(s) would be removed", highlight=False)
    else:
        also = f"; {gone} were already gone (with their containers)" if gone else ""
        ui.err.print(f"removed {len(acted)} object(s) of {nodes} node(s){also}", highlight=False)
    if kept and not force_unknown:
        ui.err.print(f"kept {kept} object(s) of nodes with no owner file (--force-unknown removes them)",
                     highlight=False)  # fmt: skip
    for f in failures:
        ui.err.print(f"[red]error:[/] could not remove {f.orphan.kind} {f.orphan.name} of node {f.orphan.key}: "
                     f"{f.error}", highlight=False)  # fmt: skip
