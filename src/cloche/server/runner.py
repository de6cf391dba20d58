"""`cloche up` and `cloche server`: run the API server, with the embedded node on this
host, or as one replica of a cluster (its nodes in etcd, its records in PostgreSQL)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.panel import Panel

from cloche.config import Settings
from cloche.constants import SERVER_KEEP_ALIVE_S
from cloche.server import access
from cloche.server.app import create_app
from cloche.server.shutdown import Drain, DrainingServer


def serve(data_dir: Path, host: str, port: int, pool_size: int, **cluster: str) -> None:
    """`cluster`: etcd, cluster_dir, region, advertise (cloche server); their CLOCHE_* variables also apply."""
    settings = Settings(data_dir=data_dir.resolve(), host=host, port=port, pool_size=pool_size)
    settings.apply_env(os.environ)
    for name, value in cluster.items():
        if value:
            setattr(settings, name, value)
    console = Console(stderr=True)
    url = f"http://{host}:{port}"
    key_path = settings.admin_key_path
    title = f"cloche server (cluster at etcd {settings.etcd})" if settings.etcd else "cloche up"
    console.print(Panel.fit(
        f"[bold]cloche[/] serving on [cyan]{url}[/]\n"
        f"admin key: [cyan]{key_path}[/] (written on first start, mode 0600)\n\n"
        f"[bold]quickstart[/]\n"
        f"  export CLOCHE_URL={url} CLOCHE_API_KEY=$(cat {key_path})\n"
        f"  cloche sandbox create            # prints the sandbox id\n"
        f"  cloche sandbox exec ID -- python3 -c 'print(6*7)'",
        title=title,
    ))  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if settings.access_log:
        access.to_stderr()
    drain = Drain()
    config = uvicorn.Config(create_app(settings, drain), host=host, port=port, log_level="warning", access_log=False,
                            timeout_keep_alive=SERVER_KEEP_ALIVE_S,
                            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)))  # fmt: skip
    DrainingServer(config, drain).run()
