"""The nodes this control plane runs sandboxes on (embedded mode: one; a cluster: every live one)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from cloche.server.auth import Admin
from cloche.server.context import ctx

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("")
async def list_nodes(request: Request, _: Admin) -> dict[str, list[dict[str, Any]]]:
    """Capacity, overcommit and allocatable, allocation by request, live usage, warm
    pools and the admission queue of every node."""
    c = ctx(request)
    if c.fleet is not None:
        return {"items": c.fleet.summary()}
    if c.sandboxes.scheduler is not None:
        return {"items": c.sandboxes.scheduler.nodes()}
    return {"items": [c.nodes.summary()]}
