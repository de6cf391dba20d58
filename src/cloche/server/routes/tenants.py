"""Tenants and their API keys (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cloche.control.errors import ApiError, not_found
from cloche.server.auth import Admin
from cloche.server.context import ctx
from cloche.server.models import KeyCreated, TenantCreate, TenantCreated, TenantOut
from cloche.store.db import IntegrityError

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantCreated)
async def create_tenant(body: TenantCreate, request: Request, _: Admin) -> TenantCreated:
    c = ctx(request)
    s = c.settings
    try:
        tenant, key_id, key = c.store.create_tenant(
            body.name,
            body.max_sandboxes if body.max_sandboxes is not None else s.max_sandboxes,
            body.max_cpu if body.max_cpu is not None else s.max_cpu,
            body.max_memory_mb if body.max_memory_mb is not None else s.max_memory_mb,
            priority=body.priority,
            isolation=tuple(body.isolation),
        )
    except IntegrityError:
        raise ApiError(409, "conflict", f"tenant name {body.name!r} is taken") from None
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key, key_id=key_id)


@router.get("", response_model=dict[str, list[TenantOut]])
async def list_tenants(request: Request, _: Admin) -> dict[str, list[TenantOut]]:
    items = [TenantOut(**{k: getattr(t, k) for k in TenantOut.model_fields})
             for t in ctx(request).store.tenants()]  # fmt: skip
    return {"items": items}


@router.post("/{tenant_id}/keys", status_code=201, response_model=KeyCreated)
async def create_key(tenant_id: str, request: Request, _: Admin) -> KeyCreated:
    store = ctx(request).store
    if store.tenant(tenant_id) is None:
        raise not_found("tenant", tenant_id)
    key_id, key = store.add_key(tenant_id)
    return KeyCreated(id=key_id, api_key=key)


@router.delete("/{tenant_id}/keys/{key_id}", status_code=204, response_class=Response)
async def revoke_key(tenant_id: str, key_id: str, request: Request, _: Admin) -> Response:
    if not ctx(request).store.revoke_key(tenant_id, key_id):
        raise not_found("key", key_id)
    return Response(status_code=204)
