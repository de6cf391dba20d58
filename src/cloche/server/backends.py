"""What the server runs sandboxes on: the embedded node, or a cluster's nodes.

Why it exists: the app is the same in both modes; only this composition differs.
`cloche up` builds a `NodeRuntime` in this process (it also serves the sandboxes' state
sockets and owns the sandboxes' lives: at shutdown they are hibernated or killed).
`cloche server` (Settings.etcd set) is one stateless replica of a cluster, composed in
server/cluster_backend.py, which only a replica imports: an embedded server starts
without loading etcd's gRPC client, aiohttp or the fleet.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloche.config import Settings
from cloche.control.secrets import SecretService
from cloche.metrics import Metrics
from cloche.node.api import Node
from cloche.node.runtime import NodeRuntime
from cloche.node.spec import Limits
from cloche.server.node_settings import node_config
from cloche.state.service import StateService
from cloche.store.db import Store

if TYPE_CHECKING:  # a cluster's parts, loaded by server/cluster_backend.py only
    from cloche.e2b.home import Homes
    from cloche.fleet.fleet import Fleet
    from cloche.fleet.geo import Geo
    from cloche.fleet.rtt import MeasuredLatency


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
