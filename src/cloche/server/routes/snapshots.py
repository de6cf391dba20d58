"""Named snapshots of a sandbox's files."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cloche.server import links
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.server.models import Omittable, SnapshotCreate, SnapshotList, SnapshotOut
from cloche.store.db import SnapshotRow

router = APIRouter(tags=["snapshots"])


def _out(row: SnapshotRow) -> SnapshotOut:
    return SnapshotOut(id=row.id, name=row.name, sandbox_id=row.sandbox_id, template=row.template,
                       bytes=row.bytes, created_at=row.created_at)  # fmt: skip


@router.post("/v1/sandboxes/{sandbox_id}/snapshots", status_code=201, response_model=SnapshotOut,
             responses={201: {"links": links.SNAPSHOT}})  # fmt: skip
async def create_snapshot(sandbox_id: str, body: Omittable[SnapshotCreate], request: Request,
                          tenant: CurrentTenant) -> SnapshotOut:  # fmt: skip
    """Save the sandbox's current files under a name; create sandboxes from it later with
    `POST /v1/sandboxes {"snapshot": id}`."""
    return _out(await ctx(request).snapshots.create(tenant, sandbox_id, body.name))


@router.get("/v1/snapshots", response_model=SnapshotList)
async def list_snapshots(request: Request, tenant: CurrentTenant) -> SnapshotList:
    return SnapshotList(items=[_out(r) for r in ctx(request).snapshots.list(tenant)])


@router.get("/v1/snapshots/{snapshot_id}", response_model=SnapshotOut)
async def get_snapshot(snapshot_id: str, request: Request, tenant: CurrentTenant) -> SnapshotOut:
    return _out(ctx(request).snapshots.get(tenant, snapshot_id))


@router.delete("/v1/snapshots/{snapshot_id}", status_code=204, response_class=Response)
async def delete_snapshot(snapshot_id: str, request: Request, tenant: CurrentTenant) -> Response:
    ctx(request).snapshots.delete(tenant, snapshot_id)
    return Response(status_code=204)
