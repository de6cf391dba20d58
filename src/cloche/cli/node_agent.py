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
    etcd: Annotated[
        str, typer.Option("--etcd", envvar="CLOCHE_ETCD", help="Join the cluster whose etcd is at HOST:PORT.")
    ] = "",
    node_id: Annotated[str, typer.Option("--node-id", help="The node's name in the cluster (default: its key).")] = "",
    region: Annotated[str, typer.Option("--region", help="The region label placement uses.")] = "local",
    zone: Annotated[str, typer.Option("--zone", help="The zone label.")] = "",
    advertise: Annotated[
        str, typer.Option("--advertise", help="The URL servers reach this node at (default: https://LISTEN).")
    ] = "",
) -> None:
    """Run this host's sandboxes and serve them over the node API (root).

    With --etcd the node joins a cluster: it registers under a lease, publishes its
    credential to the cluster dir for the servers, and claims each sandbox it serves.
    """
    from cloche.node.config import node_key
    from cloche.nodeapi import agent

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or on_shutdown not in ("hibernate", "kill"):
        ui.err.print("[red]error:[/] --listen is HOST:PORT and --on-shutdown is hibernate or kill")
        raise typer.Exit(2)
    member = None
    if etcd:
        member = agent.Membership(etcd=etcd, node_id=node_id or node_key(data_dir), region=region, zone=zone,
                                  address=advertise or f"https://{listen}")  # fmt: skip
    agent.serve(data_dir, cluster_dir, host.strip("[]"), int(port), name or [], pool_size, on_shutdown, member)


@app.command("rotate")
def node_rotate(
    data_dir: DataDirOpt = Path(".cloche-node"),
    grace_s: Annotated[float, typer.Option("--grace-s", help="How long the old credential stays valid.")] = 3600.0,
    cluster_dir: Annotated[
        Path | None,
        typer.Option(
            "--cluster-dir",
            help="Publish the new credential to the servers there; with --name, also "
            "issue a new server certificate from its CA.",
        ),  # fmt: skip
    ] = None,
    name: NameOpt = None,
) -> None:
    """Issue the node a new credential; the running node accepts the old one for --grace-s more."""
    from cloche.nodeapi import agent

    path = agent.rotate(data_dir, grace_s, cluster_dir, name or [])
    ui.out.print(f"new credential in {path}")


@app.command("drain", epilog="Example: cloche node drain --etcd 10.0.0.2:2379 --node-id node-1")
def node_drain(
    etcd: Annotated[str, typer.Option("--etcd", envvar="CLOCHE_ETCD", help="The cluster's etcd, HOST:PORT.")],
    node_id: Annotated[str, typer.Option("--node-id", help="The node to drain.")],
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Give up after this long.")] = 600.0,
    prefix: Annotated[
        str, typer.Option("--etcd-prefix", envvar="CLOCHE_ETCD_PREFIX", help="The cluster's key prefix.")
    ] = ("/cloche/"),
) -> None:
    """Move every sandbox off a node and stop new placements on it (before an upgrade).

    Running sandboxes are hibernated, uploaded and resumed on other nodes; sleeping ones
    resume elsewhere on their next wake. The node takes placements again when it restarts.
    """
    import asyncio

    from cloche.cluster.etcd import Etcd
    from cloche.fleet.drain import DrainTimeout, drain

    async def run() -> int:
        async with Etcd(etcd, prefix=prefix) as client:
            with ui.err.status(f"draining {node_id}..."):
                return await drain(client, node_id, timeout_s)

    try:
        moved = asyncio.run(run())
    except DrainTimeout as e:
        ui.err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    ui.out.print(f"node {node_id} drained: {moved} sandbox(es) moved")
