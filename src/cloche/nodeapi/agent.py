"""`cloche node run`'s work: a NodeRuntime served over the node API with uvicorn and TLS.

On first start the node gets a server certificate from the cluster CA for the addresses
it serves, and its first credential (DATA/nodeapi/credential, mode 0600), which is what
a control plane presents to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import uvicorn
from rich.console import Console

from cloche.config import Settings
from cloche.node.runtime import NodeRuntime
from cloche.nodeapi import tls
from cloche.nodeapi.auth import CREDENTIAL, Credentials
from cloche.nodeapi.server import create_app
from cloche.server.node_settings import node_config

API_DIR = "nodeapi"  # under the node's data dir: its certificate, key and credentials


def api_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / API_DIR


def serve(data_dir: Path, cluster_dir: Path, host: str, port: int, names: list[str], pool_size: int,
          on_shutdown: str) -> None:  # fmt: skip
    settings = Settings(data_dir=data_dir.resolve(), pool_size=pool_size).apply_env(os.environ)
    directory = api_dir(data_dir)
    if not (directory / tls.SERVER_CERT).exists():
        tls.issue_server_cert(cluster_dir, directory, [*names, host])
    credentials = Credentials(directory)
    credentials.current()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Console(stderr=True).print(
        f"[bold]cloche node[/] serving the node API on [cyan]https://{host}:{port}[/]\n"
        f"  CA: {cluster_dir / tls.CA_CERT}   credential: {directory / CREDENTIAL}"
    )

    async def main() -> None:
        rt = NodeRuntime(node_config(settings))
        config = uvicorn.Config(create_app(rt, credentials, on_shutdown), host=host, port=port, log_level="warning",
                                ssl_certfile=directory / tls.SERVER_CERT, ssl_keyfile=directory / tls.SERVER_KEY,
                                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)))  # fmt: skip
        await uvicorn.Server(config).serve()

    asyncio.run(main())


def rotate(data_dir: Path, grace_s: float, cluster_dir: Path | None, names: list[str]) -> Path:
    """A new credential (the old ones stay valid `grace_s` more seconds) and, given the
    cluster dir, a new server certificate (used from the node's next start)."""
    directory = api_dir(data_dir)
    Credentials(directory).issue(grace_s)
    if cluster_dir is not None:
        tls.issue_server_cert(cluster_dir, directory, names)
    return directory / CREDENTIAL
