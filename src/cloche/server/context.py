"""Everything a request handler needs, built once per server (no globals).

The node is not here: handlers reach sandboxes through control's services, which hold
it (`SandboxService.node`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from cloche.config import Settings
from cloche.control.agents import AgentService
from cloche.control.inside import Inside
from cloche.control.nodes import NodeStatus
from cloche.control.ports import Ports
from cloche.control.ratelimit import RateLimiter
from cloche.control.sandboxes import SandboxService
from cloche.control.secrets import SecretService
from cloche.control.snapshots import SnapshotService
from cloche.control.templates import TemplateService
from cloche.metrics import Metrics
from cloche.store.db import Store

if TYPE_CHECKING:  # a cluster's parts: an embedded server does not load them
    from cloche.fleet.fleet import Fleet
    from cloche.fleet.geo import Geo


@dataclass
class Context:
    settings: Settings
    store: Store
    sandboxes: SandboxService
    inside: Inside  # a sandbox's files and commands
    templates: TemplateService
    nodes: NodeStatus  # node-wide readings: metrics, the nodes list, the dashboard
    ports: Ports  # the ingress proxy's way in
    snapshots: SnapshotService
    agents: AgentService
    limiter: RateLimiter
    metrics: Metrics
    secrets: SecretService
    fleet: Fleet | None = None  # a cluster's nodes (None: the embedded node)
    geo: Geo | None = None  # a cluster's regions (moves between them)


def ctx(request: Request) -> Context:
    return request.app.state.ctx
