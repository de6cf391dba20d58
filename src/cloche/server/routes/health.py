"""Liveness and Prometheus metrics (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloche.server.context import ctx
from cloche.server.models import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    c = ctx(request)
    m = c.metrics
    counts: dict[str, int] = {s: 0 for s in ("creating", "running", "paused", "stopped")}
    cpu = mem = 0.0
    for rec in c.nodes.records():
        counts[rec.state] = counts.get(rec.state, 0) + 1
        if rec.state in ("running", "paused"):
            cpu += rec.spec.limits.cpu
            mem += rec.spec.limits.memory_mb
    for state, n in counts.items():
        m.sandboxes.labels(state).set(n)
    pool = c.nodes.pool()
    m.pool_ready.labels(pool.template).set(pool.ready)
    m.pool_size.labels(pool.template).set(pool.size)
    cap = c.nodes.capacity()
    m.capacity.labels("cpu").set(cap["cpu"])
    m.capacity.labels("memory_mb").set(cap["memory_mb"])
    m.allocated.labels("cpu").set(cpu)
    m.allocated.labels("memory_mb").set(mem)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
