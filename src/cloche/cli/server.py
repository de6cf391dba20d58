"""Commands about the server process itself: ``cloche up`` runs one, ``cloche health``
asks one whether it is up, ``cloche mcp`` serves MCP over stdio on top of one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui
from cloche.cli.options import KeyOpt, UrlOpt, connect

app = typer.Typer()


@app.command()
def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="CLOCHE_DATA_DIR", help="Where sandboxes, the database and keys live.")
    ] = Path(".cloche"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8787,
    pool_size: Annotated[int, typer.Option("--pool-size", help="Warm sandboxes kept ready for fast creates.")] = 2,
) -> None:
    """Run the API server with an embedded node on this host (needs root and runc).

    On first start an admin key is written to DATA_DIR/admin-key.
    """
    from cloche.server.runner import serve

    serve(data_dir, host, port, pool_size)


@app.command(
    epilog="Example: CLOCHE_DATABASE_URL=postgresql://... CLOCHE_STATE_DSN=postgresql://... "
    "CLOCHE_BLOB_URL=s3://... cloche server --etcd 10.0.0.2:2379 --cluster-dir /etc/cloche/cluster"
)
def server(
    etcd: Annotated[str, typer.Option("--etcd", envvar="CLOCHE_ETCD", help="The cluster's etcd, HOST:PORT.")],
    cluster_dir: Annotated[
        Path, typer.Option("--cluster-dir", envvar="CLOCHE_CLUSTER_DIR", help="The cluster CA and node credentials.")
    ],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="CLOCHE_DATA_DIR", help="Where the admin key is written.")
    ] = Path(".cloche-server"),
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT the API listens on.")] = "127.0.0.1:8787",
    region: Annotated[
        str,
        typer.Option(
            "--region",
            envvar="CLOCHE_REGION",
            help="This replica's region: the user's, for requests that name none (cloche-region).",
        ),
    ] = "",
    advertise: Annotated[
        str,
        typer.Option(
            "--advertise",
            envvar="CLOCHE_ADVERTISE",
            help="The URL the other replicas reach this one at (default: http://LISTEN).",
        ),
    ] = "",
) -> None:
    """Run one API replica of a cluster (stateless: run as many as you like behind one address).

    Records and state live in PostgreSQL (CLOCHE_DATABASE_URL, CLOCHE_STATE_DSN; upgrade the
    schema first with `cloche db upgrade`), snapshots in S3 (CLOCHE_BLOB_URL); the nodes are
    the `cloche node run --etcd` processes registered in etcd. One replica at a time leads:
    it checkpoints running sandboxes and carries out drains.
    """
    from cloche.server.runner import serve

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        ui.err.print("[red]error:[/] --listen is HOST:PORT")
        raise typer.Exit(2)
    serve(
        data_dir,
        host,
        int(port),
        0,
        etcd=etcd,
        cluster_dir=str(cluster_dir.resolve()),
        region=region,
        advertise=advertise,
    )


@app.command()
def health(url: UrlOpt = None) -> None:
    """Check that the server is up."""
    with connect(url, None) as client:
        status = client.health().status
    ui.out.print(status)
    if status != "ok":
        raise typer.Exit(1)


@app.command()
def mcp(url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Serve MCP (Model Context Protocol) on stdin/stdout, for MCP clients that launch it.

    Tools: create_sandbox, exec, read_file, write_file, list_files, run_code,
    expose_port, hibernate, kill, get_state, put_state; each acts with this API key.
    `cloche up` also serves MCP over streamable HTTP at /mcp (Authorization: Bearer KEY).
    """
    import asyncio

    from cloche.mcp.stdio import serve

    asyncio.run(serve(url, api_key))
