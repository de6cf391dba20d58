"""Everything a request handler needs, built once per server (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from cloche.config import Settings
from cloche.control.agents import AgentService
from cloche.control.ratelimit import RateLimiter
from cloche.control.sandboxes import SandboxService
from cloche.control.secrets import SecretService
from cloche.control.snapshots import SnapshotService
from cloche.metrics import Metrics
from cloche.node.api import Node
from cloche.store.db import Store


@dataclass
class Context:
    settings: Settings
    store: Store
    runtime: Node
    sandboxes: SandboxService
    snapshots: SnapshotService
    agents: AgentService
    limiter: RateLimiter
    metrics: Metrics
    secrets: SecretService


def ctx(request: Request) -> Context:
    return request.app.state.ctx
