"""``cloche node run`` and ``cloche node rotate``: the node agent of a cluster, serving
this host's sandboxes over the authenticated node API (see docs/cluster.md, "Node
API"), and the rotation of its credential and certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui

app = typer.Typer()

DataDirOpt = Annotated[
    Path, typer.Option("--data-dir", envvar="CLOCHE_DATA_DIR", help="Where the node keeps sandboxes and its keys.")
]
NameOpt = Annotated[
    list[str] | None,
    typer.Option("--name", help="Another host name or address the certificate covers (repeatable)."),
]


@app.command("run", epilog="Example: sudo cloche node run --listen 10.0.0.5:8788 --cluster-dir /etc/cloche/cluster")
def node_run(
    data_dir: DataDirOpt = Path(".cloche-node"),
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT the node API listens on (HTTPS).")] = (
        "127.0.0.1:8788"
    ),
    cluster_dir: Annotated[
        Path, typer.Option("--cluster-dir", envvar="CLOCHE_CLUSTER_DIR", help="Holds the cluster CA (made if missing).")
    ] = Path(".cloche-cluster"),
    name: NameOpt = None,
    pool_size: Annotated[int, typer.Option("--pool-size", help="Warm sandboxes kept ready for fast creates.")] = 2,
    on_shutdown: Annotated[
        str, typer.Option("--on-shutdown", help="hibernate (files kept) or kill every sandbox when the node stops.")
    ] = "hibernate",
) -> None:
    """Run this host's sandboxes and serve them over the node API (root)."""
    from cloche.nodeapi import agent

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or on_shutdown not in ("hibernate", "kill"):
        ui.err.print("[red]error:[/] --listen is HOST:PORT and --on-shutdown is hibernate or kill")
        raise typer.Exit(2)
    agent.serve(data_dir, cluster_dir, host.strip("[]"), int(port), name or [], pool_size, on_shutdown)


@app.command("rotate")
def node_rotate(
    data_dir: DataDirOpt = Path(".cloche-node"),
    grace_s: Annotated[float, typer.Option("--grace-s", help="How long the old credential stays valid.")] = 3600.0,
    cluster_dir: Annotated[
        Path | None, typer.Option("--cluster-dir", help="Also issue a new server certificate from this cluster CA.")
    ] = None,
    name: NameOpt = None,
) -> None:
    """Issue the node a new credential; the running node accepts the old one for --grace-s more."""
    from cloche.nodeapi import agent

    if cluster_dir is not None and not name:
        ui.err.print("[red]error:[/] a new certificate needs the names it covers (--name)")
        raise typer.Exit(2)
    path = agent.rotate(data_dir, grace_s, cluster_dir, name or [])
    ui.out.print(f"new credential in {path}")
