"""What the server runs sandboxes on: the embedded node, or a cluster's nodes.

Why it exists: the app is the same in both modes; only this composition differs.
`cloche up` builds a `NodeRuntime` in this process (it also serves the sandboxes' state
sockets and owns the sandboxes' lives: at shutdown they are hibernated or killed).
`cloche server` (Settings.etcd set) is one stateless replica of a cluster: a `Fleet`
over the nodes etcd lists, a campaign for the leadership (checkpoints and drains,
fleet/leader.py), and nothing that outlives the process: the nodes keep the sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cloche.cluster.election import Election
from cloche.cluster.etcd import Etcd
from cloche.config import Settings
from cloche.control.secrets import SecretService
from cloche.e2b.home import Homes
from cloche.fleet.fleet import Fleet
from cloche.fleet.geo import Geo, build_geo
from cloche.fleet.leader import Leader
from cloche.fleet.placements import PlacementTable
from cloche.fleet.rtt import MeasuredLatency
from cloche.fleet.scoring import fleet_matrix
from cloche.metrics import Metrics
from cloche.node.api import Node
from cloche.node.runtime import NodeRuntime
from cloche.node.spec import Limits
from cloche.server.node_settings import node_config
from cloche.state.service import StateService
from cloche.store.db import Store


@dataclass
class Backend:
    node: Node
    state: StateService
    pool_limits: Limits
    metrics: Metrics
    embedded: bool  # the sandboxes live and die with this process
    fleet: Fleet | None = None
    geo: Geo | None = None  # a cluster's regions: moves, replicas, following the user
    latency: MeasuredLatency | None = None  # cluster mode: the round trips between regions, as measured
    envd_homes: Homes | None = None  # which replica serves each sandbox's envd calls (cluster)


@contextlib.asynccontextmanager
async def embedded(settings: Settings, store: Store, secrets: SecretService,
                   forced: Callable[[], bool]) -> AsyncIterator[Backend]:  # fmt: skip
    runtime = NodeRuntime(node_config(settings))
    runtime.pinned_manifests = store.snapshot_manifests
    if runtime.network:
        runtime.network.secrets = secrets.resolve
    state = await StateService.start(settings, store, runtime)  # before start: adoptions
    await runtime.start()
    metrics = Metrics(runtime.network_counters, runtime.network and runtime.network.proxy_metrics)
    try:
        yield Backend(runtime, state, runtime.config.pool_limits, metrics, embedded=True)
    finally:
        await runtime.shutdown(settings.on_shutdown, forced)
        await runtime.close()
        await state.close()


def check_cluster_settings(settings: Settings) -> None:
    """A replica shares everything with the others: PostgreSQL for records and state, a
    cluster dir with the CA and the nodes' credentials. Say which is missing."""
    missing = [name for name, ok in (
        ("CLOCHE_DATABASE_URL (postgresql://...)", settings.database_url.startswith("postgresql")),
        ("CLOCHE_STATE_DSN (postgresql://...)", settings.state_dsn.startswith("postgresql")),
        ("CLOCHE_CLUSTER_DIR (the cluster CA and node credentials)", bool(settings.cluster_dir)),
    ) if not ok]  # fmt: skip
    if missing:
        raise ValueError("cluster mode (CLOCHE_ETCD) needs " + ", ".join(missing))


@contextlib.asynccontextmanager
async def clustered(settings: Settings, store: Store) -> AsyncIterator[Backend]:
    check_cluster_settings(settings)
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(Etcd(settings.etcd, prefix=settings.etcd_prefix))
        # the round trips the nodes measure, the configured ones for pairs nobody measured
        latency = await stack.enter_async_context(MeasuredLatency(etcd, fallback=fleet_matrix(settings.latency_matrix)))
        fleet = Fleet(etcd, Path(settings.cluster_dir), PlacementTable(store))
        fleet.matrix = lambda: latency.matrix
        await fleet.start()
        stack.push_async_callback(fleet.close)
        state = await StateService.start(settings, store, None)
        stack.push_async_callback(state.close)
        replica = f"{socket.gethostname()}:{settings.port}:{os.getpid()}"
        election = Election(etcd, "leader", replica, ttl=settings.lease_ttl_s, margin=settings.lease_margin_s)
        metrics = Metrics(fleet.network_counters)
        geo = build_geo(settings, fleet, store, metrics.registry)
        leader = Leader(fleet, settings.checkpoint_interval_s, geo.replicator.replicate)
        leading = asyncio.create_task(election.run(leader))

        async def stop_leading() -> None:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leading

        stack.push_async_callback(stop_leading)
        homes = Homes(etcd, settings.advertise_url, ttl=settings.lease_ttl_s, margin=settings.lease_margin_s)
        stack.push_async_callback(homes.close)
        yield Backend(
            fleet, state, Limits(), metrics, embedded=False, fleet=fleet, geo=geo, latency=latency, envd_homes=homes
        )
