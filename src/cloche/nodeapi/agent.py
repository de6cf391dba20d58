"""`cloche node run`'s work: a NodeRuntime served over the node API with uvicorn and TLS.

On first start the node gets a server certificate from the cluster CA for the addresses
it serves, and its first credential (DATA/nodeapi/credential, mode 0600), which is what
a control plane presents to it. In a cluster (`--etcd`) it also publishes that credential
to the cluster dir for the server replicas (node-credentials/<node id>), registers
itself in etcd under a lease, claims each sandbox before serving it and pauses them all
when it cannot renew the lease (nodeapi/instances.py), times the round trip to every
region (nodeapi/probes.py), and serves its sandboxes' state sockets from PostgreSQL itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from rich.console import Console

from cloche import __version__
from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.membership import NodeInfo, NodeRegistration
from cloche.config import Settings
from cloche.constants import SERVER_KEEP_ALIVE_S
from cloche.fleet.drain import undrain
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime
from cloche.nodeapi import tls
from cloche.nodeapi.auth import CREDENTIAL, Credentials, publish_credential
from cloche.nodeapi.instances import InstanceGuard
from cloche.nodeapi.probes import RttProber
from cloche.nodeapi.server import create_app
from cloche.server.node_settings import node_config
from cloche.state.service import StateService
from cloche.store.db import Store

API_DIR = "nodeapi"  # under the node's data dir: its certificate, key and credentials
NODE_ID = "node-id"  # under API_DIR: the node's id in its cluster, for `rotate`


def api_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / API_DIR


@dataclass(frozen=True)
class Membership:
    """How the node joins a cluster (`--etcd`); without one it serves whoever holds its credential."""

    etcd: str
    node_id: str
    region: str
    zone: str
    address: str  # the URL the servers reach the node API at


def serve(data_dir: Path, cluster_dir: Path, host: str, port: int, names: list[str], pool_size: int,
          on_shutdown: str, member: Membership | None = None) -> None:  # fmt: skip
    settings = Settings(data_dir=data_dir.resolve(), pool_size=pool_size).apply_env(os.environ)
    directory = api_dir(data_dir)
    if not (directory / tls.SERVER_CERT).exists():
        tls.issue_server_cert(cluster_dir, directory, [*names, host])
    credentials = Credentials(directory)
    token = credentials.current()
    if member is not None:
        settings.node_region = member.region  # its snapshots go to its region's store
        publish_credential(cluster_dir, member.node_id, token)
        (directory / NODE_ID).write_text(member.node_id)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Console(stderr=True).print(
        f"[bold]cloche node[/] serving the node API on [cyan]https://{host}:{port}[/]\n"
        f"  CA: {cluster_dir / tls.CA_CERT}   credential: {directory / CREDENTIAL}"
    )

    async def main() -> None:
        rt = NodeRuntime(node_config(settings))
        async with contextlib.AsyncExitStack() as stack:
            guard = (
                None
                if member is None
                else await stack.enter_async_context(joined(rt, member, settings, cluster_dir / tls.CA_CERT))
            )
            config = uvicorn.Config(create_app(rt, credentials, on_shutdown, guard), host=host, port=port,
                                    log_level="warning", ssl_certfile=directory / tls.SERVER_CERT,
                                    ssl_keyfile=directory / tls.SERVER_KEY,
                                    timeout_keep_alive=SERVER_KEEP_ALIVE_S,
                                    timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)))  # fmt: skip
            await uvicorn.Server(config).serve()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def joined(rt: NodeRuntime, member: Membership, settings: Settings,
                 ca: Path) -> AsyncIterator[InstanceGuard]:  # fmt: skip
    """The node in the cluster: registered under a lease, its sandboxes claimed, timing the
    round trip to every region (probes.py, trusting the cluster CA `ca`), and (with a
    PostgreSQL state DSN) their state sockets served from PostgreSQL by this node."""
    info = NodeInfo(address=member.address, capacity=int(rt.capacity()["memory_mb"]), region=member.region,
                    zone=member.zone, isolation=tuple(sorted(rt.drivers)), version=__version__)  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(Etcd(member.etcd, prefix=settings.etcd_prefix))
        registration = NodeRegistration(etcd, member.node_id, info, ttl=settings.lease_ttl_s,
                                        margin=settings.lease_margin_s)  # fmt: skip
        guard = InstanceGuard(etcd, registration, rt)
        registration.on_fenced = guard.fence
        await stack.enter_async_context(registration)
        if await undrain(etcd, member.node_id):
            logging.getLogger("cloche.node").info("node %s was draining; it takes placements again", member.node_id)
        rt.subscribe(guard)
        rt.subscribe(LoadReport(rt, registration))
        if settings.rtt_probe_interval_s > 0:
            await stack.enter_async_context(RttProber(etcd, registration, ca, settings.rtt_probe_interval_s))
        if settings.state_dsn and settings.database_url:
            store = Store(settings.database_url)
            stack.callback(store.close)
            state = await StateService.start(settings, store, rt, fence_of=guard.fence_of)
            stack.push_async_callback(state.close)
            guard.on_claim = state.engine.advance_fence
        yield guard


class LoadReport:
    """Keeps the node's advertised load (running sandboxes) current in etcd."""

    def __init__(self, rt: NodeRuntime, registration: NodeRegistration) -> None:
        self.rt = rt
        self.registration = registration

    async def _update(self) -> None:
        load = sum(1 for r in self.rt.list() if r.state == "running")
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            await self.registration.update(load=load)

    async def sandbox_started(self, record: SandboxRecord) -> None:
        await self._update()

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        await self._update()


def rotate(data_dir: Path, grace_s: float, cluster_dir: Path | None, names: list[str]) -> Path:
    """A new credential (the old ones stay valid `grace_s` more seconds) and, given the
    cluster dir, a new server certificate (used from the node's next start)."""
    directory = api_dir(data_dir)
    token = Credentials(directory).issue(grace_s)
    if cluster_dir is not None:
        if names:
            tls.issue_server_cert(cluster_dir, directory, names)
        if (directory / NODE_ID).exists():
            publish_credential(cluster_dir, (directory / NODE_ID).read_text().strip(), token)
    return directory / CREDENTIAL
