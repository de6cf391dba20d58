"""The nodes this control plane runs sandboxes on (embedded mode: one)."""

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
    if c.sandboxes.scheduler is not None:
        return {"items": c.sandboxes.scheduler.nodes()}
    rt = c.runtime
    active = [r for r in rt.list() if r.state in ("running", "paused")]
    pool = rt.pool_status()
    return {
        "items": [
            {
                "id": rt.key,
                "state": "ready",
                "capacity": rt.capacity(),
                "allocated": {
                    "cpu": sum(r.spec.limits.cpu for r in active),
                    "memory_mb": sum(r.spec.limits.memory_mb for r in active),
                },
                "sandboxes": len(rt.list()),
                "pools": [{"template": pool.template, "ready": pool.ready, "size": pool.size}],
            }
        ]
    }
