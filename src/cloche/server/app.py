"""The FastAPI application factory: wires settings, store, the node into control, and routes."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cloche import __version__
from cloche.config import Settings
from cloche.control.agents import AgentService
from cloche.control.inside import Inside
from cloche.control.nodes import NodeStatus
from cloche.control.ports import Ports
from cloche.control.ratelimit import RateLimiter
from cloche.control.sandboxes import SandboxService, embedded_location
from cloche.control.secrets import SecretService
from cloche.control.snapshots import SnapshotService
from cloche.control.templates import TemplateService
from cloche.e2b import router as e2b_router
from cloche.mcp import http as mcp_http
from cloche.scheduler.local import LocalScheduler
from cloche.server import errors, ui
from cloche.server.access import AccessLog
from cloche.server.backends import embedded
from cloche.server.context import Context
from cloche.server.kvfast import KvFastPath
from cloche.server.limits import BodyLimit
from cloche.server.region import RegionMiddleware
from cloche.server.routes import apps, files, health, nodes, ports, sandboxes, secrets, snapshots, templates, tenants
from cloche.server.routes import code as code_routes
from cloche.server.routes import exec as exec_routes
from cloche.server.routes import state as state_routes
from cloche.server.shutdown import Drain, DrainGate
from cloche.store.db import Store
from cloche.store.engine import IntegrityError


def ensure_admin_key(store: Store, settings: Settings) -> str:
    """Create the admin tenant on first start and keep DIR/admin-key (0600) valid."""
    path = settings.admin_key_path
    if path.exists():
        key = path.read_text().strip()
        if store.authenticate(key) is not None:
            return key
    key = _new_admin_key(store, settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def _new_admin_key(store: Store, settings: Settings) -> str:
    """A new key of the admin tenant, which is created first if no server made it yet."""
    admin = store.tenant_by_name("admin")
    if admin is None:
        try:
            return store.create_tenant("admin", settings.max_sandboxes, settings.max_cpu, settings.max_memory_mb,
                                       is_admin=True)[2]  # fmt: skip
        except IntegrityError:  # another replica, starting on the same database, made it first
            admin = store.tenant_by_name("admin")
            if admin is None:
                raise
    return store.add_key(admin.id)[1]


def create_app(settings: Settings, drain: Drain | None = None) -> FastAPI:
    drain = drain or Drain()
    if settings.on_shutdown not in ("hibernate", "kill"):
        raise ValueError(f"on_shutdown must be hibernate or kill, got {settings.on_shutdown!r}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.database_url or settings.db_path)
        ensure_admin_key(store, settings)
        secret_service = SecretService(store, settings.secret_keys_path)  # resolve() is the egress proxy's lookup
        if settings.etcd:
            from cloche.server.cluster_backend import clustered  # a replica only: see its docstring

            backend = clustered(settings, store)
        else:
            backend = embedded(settings, store, secret_service, lambda: drain.forced)
        try:
            async with backend as b:
                app.state.state = b.state
                app.state.envd_homes = b.envd_homes  # read by EnvdAffinity
                service = SandboxService(store, b.node, b.pool_limits, settings.network_default)
                service.secrets = secret_service
                if b.embedded:  # a cluster's records are shared by every replica: none reconciles alone
                    await service.reconcile()
                if b.fleet is not None:
                    service.locate = b.fleet.locate
                else:
                    service.region = settings.region or "local"
                    service.locate = functools.partial(embedded_location, region=service.region)
                service.scheduler = LocalScheduler(b.node, store, settings)
                await service.scheduler.start()
                agents = AgentService(service)
                if b.geo is not None:
                    agents.follow = b.geo.follower
                app.state.ctx = Context(
                    settings=settings,
                    store=store,
                    sandboxes=service,
                    inside=Inside(service),
                    templates=TemplateService(b.node),
                    nodes=NodeStatus(b.node),
                    ports=Ports(b.node),
                    snapshots=SnapshotService(service),
                    agents=agents,
                    limiter=RateLimiter(settings.rate_per_s, settings.rate_burst),
                    metrics=b.metrics,
                    secrets=secret_service,
                    fleet=b.fleet,
                    geo=b.geo,
                )
                try:
                    yield
                finally:
                    drain.cleaned = True
                    await service.scheduler.close()
        finally:
            store.close()

    app = FastAPI(
        title="cloche",
        version=__version__,
        description="Isolated, durable, per-user sandboxes for one-to-one AI agents.",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (health, tenants, templates, sandboxes, snapshots, secrets, exec_routes, code_routes, files,
                   nodes, state_routes, apps):  # fmt: skip
        app.include_router(module.router)
    app.include_router(mcp_http.router())  # /mcp: MCP over streamable HTTP (cloche.mcp)
    app.include_router(e2b_router)  # E2B's API and in-sandbox protocol (cloche.e2b)
    app.add_middleware(BodyLimit, settings=settings)
    ui.install(app)  # the web dashboard at /ui (cloche.server.ui)
    if settings.etcd:  # a cluster's envd calls go to their sandbox's home replica
        from cloche.server.affinity import EnvdAffinity  # a replica only, as cluster_backend

        app.add_middleware(EnvdAffinity)
    ports.install(app, settings)  # exposed ports: routes, and the ingress middleware
    app.add_middleware(RegionMiddleware, settings=settings)  # the user's region in, `cloche-region` out
    app.add_middleware(DrainGate, drain=drain)  # while stopping, nothing new gets in
    if settings.access_log:
        app.add_middleware(AccessLog)  # one line per request, whoever answered it
    app.add_middleware(KvFastPath, settings=settings, drain=drain)  # outermost: answers GET/PUT of a KV key itself
    return app
