"""E2B's sandbox metrics: the current sample of a running sandbox (no history is kept),
for one sandbox or many."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloche.control.errors import ApiError
from cloche.e2b.api import E2bRoute, authenticate, iso
from cloche.e2b.errors import E2bError
from cloche.node.errors import RuntimeFailure
from cloche.server.context import Context

router = APIRouter(route_class=E2bRoute, include_in_schema=False)


# ---- metrics (before /sandboxes/{id}) ---------------------------------------------------------


def _metric(c: Context, sandbox_id: str) -> dict[str, Any] | None:
    """A running sandbox's current sample as E2B's SandboxMetric (no history is kept):
    cpu from the scheduler's reading of the cgroup each second (0 before the first),
    memory as E2B counts it (`memUsed` without the page cache, which is `memCache`),
    disk from the sandbox's own filesystem image."""
    rec = c.nodes.record(sandbox_id)
    if rec.state != "running":
        return None
    try:
        usage = c.nodes.usage(sandbox_id)
    except (OSError, RuntimeFailure):
        return None
    scheduler = c.sandboxes.scheduler
    cores = scheduler.view.usage.get(sandbox_id, (0.0, 0.0))[0] if scheduler else 0.0
    anon = usage.anon_memory_bytes
    cpus = max(1, math.ceil(rec.spec.limits.cpu))
    disk = c.nodes.disk_usage(sandbox_id)
    now = time.time()
    return {"timestamp": iso(now), "timestampUnix": int(now), "cpuCount": cpus,
            "cpuUsedPct": round(min(100.0, cores / cpus * 100), 2), "memUsed": anon,
            "memTotal": rec.spec.limits.memory_mb << 20, "memCache": max(0, usage.memory_bytes - anon),
            "diskUsed": disk.used_bytes, "diskTotal": disk.total_bytes}  # fmt: skip


def _unix_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise E2bError(400, f"{name} must be a Unix time in seconds") from None


async def metrics_many(request: Request) -> Response:
    _, c, tenant = authenticate(request)
    ids = [s for s in (request.query_params.get("sandbox_ids") or "").split(",") if s]
    if len(ids) > 100:
        raise E2bError(400, "at most 100 sandbox_ids")
    out = {}
    for sandbox_id in ids:
        try:
            c.sandboxes.get(tenant, sandbox_id)
        except ApiError:
            continue
        metric = _metric(c, sandbox_id)
        if metric is not None:
            out[sandbox_id] = metric
    return JSONResponse({"sandboxes": out})


async def metrics_one(sandbox_id: str, request: Request) -> Response:
    """The current sample, when it falls within `start`..`end` (Unix seconds) if given."""
    _, c, tenant = authenticate(request)
    start, end = _unix_param(request, "start"), _unix_param(request, "end")
    c.sandboxes.get(tenant, sandbox_id)
    metric = _metric(c, sandbox_id)
    if metric is None or (start is not None and metric["timestampUnix"] < start) \
            or (end is not None and metric["timestampUnix"] > end):  # fmt: skip
        return JSONResponse([])
    return JSONResponse([metric])


router.add_api_route("/sandboxes/metrics", metrics_many, methods=["GET"])
router.add_api_route("/sandboxes/{sandbox_id}/metrics", metrics_one, methods=["GET"])
