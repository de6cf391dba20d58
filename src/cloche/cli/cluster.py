"""``cloche cluster local``: a real cluster on this machine (etcd, PostgreSQL, SeaweedFS,
two server replicas behind one address and N nodes), for trying cluster mode and for the
tests; the work is in :mod:`cloche.cluster.local`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui

app = typer.Typer(help="Run a cluster.", no_args_is_help=True)


@app.command("local", epilog="Example: sudo cloche cluster local --nodes 3 --regions eu,us")
def local(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="How many nodes to run.")] = 3,
    port: Annotated[int, typer.Option("--port", help="TCP port the API is served on (127.0.0.1).")] = 8787,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where every process keeps its data (and the admin key).")
    ] = Path("/var/tmp/cloche-cluster"),
    regions: Annotated[
        str,
        typer.Option(
            "--regions",
            help="Comma-separated regions, given to nodes in turn; each region's nodes run in a network "
            "namespace of its own (default: one region, `local`, on loopback).",
        ),
    ] = "",
    delay_ms: Annotated[
        float,
        typer.Option("--inter-region-delay-ms", min=0, help="One-way delay between regions (with --regions)."),
    ] = 0.0,
    on_shutdown: Annotated[
        str, typer.Option("--on-shutdown", help="hibernate (files kept) or kill the sandboxes when the cluster stops.")
    ] = "kill",
    pool_size: Annotated[int, typer.Option("--pool-size", help="Warm sandboxes each node keeps ready.")] = 1,
) -> None:
    """Run etcd, PostgreSQL, SeaweedFS, two servers and N nodes here until Ctrl-C (root).

    The API answers on 127.0.0.1:PORT (spread over the two servers); the admin key is in DATA_DIR/admin-key.
    A live table shows the nodes (one line per event when not on a terminal).
    Ctrl-C or SIGTERM stops every process it started.
    """
    from cloche.cluster.local.launcher import LocalCluster, Options, missing_services, supervise
    from cloche.cluster.local.netns import valid_region
    from cloche.cluster.local.table import display

    missing = missing_services()
    for service in missing:
        ui.err.print(f"[red]error:[/] {service}", highlight=False)
    if missing:
        raise typer.Exit(2)
    names = [r.strip() for r in regions.split(",") if r.strip()] or ["local"]
    if not all(map(valid_region, names)) or on_shutdown not in ("hibernate", "kill"):
        ui.err.print("[red]error:[/] --regions names regions of lower-case letters, digits and dashes, "
                     "and --on-shutdown is hibernate or kill")  # fmt: skip
        raise typer.Exit(2)
    if os.geteuid() != 0:
        ui.err.print("[red]error:[/] cloche cluster local runs nodes, which need root")
        raise typer.Exit(1)
    view = display(ui.out, f"cloche cluster local: http://127.0.0.1:{port}, admin key in {data_dir}/admin-key")
    options = Options(nodes, port, data_dir, names, on_shutdown, pool_size, netns=bool(regions.strip()),
                      inter_region_delay_ms=delay_ms)  # fmt: skip
    cluster = LocalCluster(options, view.event)
    try:
        asyncio.run(supervise(cluster, view))
    except (OSError, RuntimeError) as e:
        view.close()
        ui.err.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    view.close()
