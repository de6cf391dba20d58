"""A cluster replica's backend (`cloche server`, Settings.etcd set): a `Fleet` over the
nodes etcd lists, a campaign for the leadership (checkpoints and drains,
fleet/leader.py), the envd homes, and nothing that outlives the process: the nodes keep
the sandboxes.

Why it is a module of its own: only a replica imports it (server/app.py, when etcd is
set), so `cloche up` starts without loading etcd's gRPC client, aiohttp and the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from cloche.cluster.election import Election
from cloche.cluster.etcd import Etcd
from cloche.config import Settings
from cloche.e2b.home import Homes
from cloche.fleet.fleet import Fleet
from cloche.fleet.geo import build_geo
from cloche.fleet.leader import Leader
from cloche.fleet.placements import PlacementTable
from cloche.fleet.rtt import MeasuredLatency
from cloche.fleet.scoring import fleet_matrix
from cloche.metrics import Metrics
from cloche.node.spec import Limits
from cloche.server.backends import Backend
from cloche.state.service import StateService
from cloche.store.db import Store


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
