"""Nodes and pools (capacity, load, warm pool vs claim rate) and per-tenant usage (admin).

Both read what the API's admin views read: the scheduler's `nodes()` (as `GET /v1/nodes`)
and each tenant's sandboxes through `SandboxService.list`. The usage chart is inline SVG
drawn by the template from the numbers here, so no chart library is shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from cloche.control.errors import ApiError
from cloche.server.ui.figures import ACTIVE
from cloche.server.ui.render import live_page, ui_router
from cloche.server.ui.session import Page, Viewer

router = ui_router()


def _admin(v: Viewer) -> None:
    if not v.tenant.is_admin:
        raise ApiError(403, "forbidden", "this page needs the admin key")


def _nodes(v: Viewer) -> list[dict[str, Any]]:
    scheduler = v.c.sandboxes.scheduler
    if scheduler is None:
        raise ApiError(501, "not_implemented", "this server has no scheduler")
    return scheduler.nodes()


@router.get("/nodes")
async def nodes(request: Request, v: Page) -> Response:
    _admin(v)
    return live_page(request, "nodes.html", v, nodes=_nodes(v))


@dataclass
class Bar:
    label: str
    used: float
    limit: float
    unit: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.used / self.limit) if self.limit > 0 else 0.0


@dataclass
class TenantUsage:
    name: str
    counts: dict[str, int]
    bars: list[Bar]


def _usage(v: Viewer) -> list[TenantUsage]:
    nodes = v.c.nodes
    out = []
    for t in v.tenants():
        views = v.c.sandboxes.list(t)
        active = [s.record for s in views if s.record.state in ACTIVE]
        counts: dict[str, int] = {}
        for s in views:
            counts[s.record.state] = counts.get(s.record.state, 0) + 1
        live_mb = sum(nodes.usage(r.id).memory_bytes for r in active) / 2**20
        out.append(TenantUsage(t.name, counts, [
            Bar("sandboxes", len(views), t.max_sandboxes, ""),
            Bar("cpu", sum(r.spec.limits.cpu for r in active), t.max_cpu, " cpu"),
            Bar("memory", sum(r.spec.limits.memory_mb for r in active), t.max_memory_mb, " MB"),
            Bar("memory in use", round(live_mb, 1), t.max_memory_mb, " MB"),
        ]))  # fmt: skip
    return out


@router.get("/usage")
async def usage(request: Request, v: Page) -> Response:
    _admin(v)
    return live_page(request, "usage.html", v, usage=_usage(v))
