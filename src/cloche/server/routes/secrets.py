"""Tenants' secrets: values a sandbox's requests can carry (`${secret:NAME}` in
`network.rules`) without the sandbox ever holding them. No route returns a value."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from cloche.server import links
from cloche.server.auth import Admin, CurrentTenant
from cloche.server.context import ctx
from cloche.server.models import KeyRotation, SecretCreate, SecretList, SecretOut, SecretUpdate
from cloche.store.db import SecretRow

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])


def _out(row: SecretRow) -> SecretOut:
    return SecretOut(name=row.name, hosts=row.hosts, created_at=row.created_at, updated_at=row.updated_at)


@router.post("", status_code=201, response_model=SecretOut, responses={201: {"links": links.SECRET}})
async def create_secret(body: SecretCreate, request: Request, tenant: CurrentTenant) -> SecretOut:
    """Store a secret (encrypted) that may be sent only to `hosts`; 409 if the name is taken."""
    row = ctx(request).secrets.create(tenant.id, body.name, body.value.get_secret_value(), body.hosts)
    return _out(row)


@router.get("", response_model=SecretList)
async def list_secrets(request: Request, tenant: CurrentTenant) -> SecretList:
    """This tenant's secrets: names and hosts, never values."""
    return SecretList(items=[_out(r) for r in ctx(request).secrets.list(tenant.id)])


@router.post("/rotate-key", response_model=KeyRotation)
async def rotate_key(request: Request, _: Admin, drop_old: bool = False) -> KeyRotation:
    """Admin: encrypt every secret under a new key (put first in the key file). Old keys
    stay in the file unless `drop_old`, which removes them once everything is re-encrypted."""
    done = await asyncio.to_thread(ctx(request).secrets.rotate_key, drop_old)
    return KeyRotation(secrets=done.secrets, keys=done.keys, dropped=done.dropped)


@router.get("/{name}", response_model=SecretOut)
async def get_secret(name: str, request: Request, tenant: CurrentTenant) -> SecretOut:
    """One secret's name and hosts (never its value)."""
    return _out(ctx(request).secrets.get(tenant.id, name))


@router.put("/{name}", response_model=SecretOut, responses={201: {"model": SecretOut, "description": "Created"}})
async def put_secret(name: str, body: SecretUpdate, request: Request, response: Response,
                     tenant: CurrentTenant) -> SecretOut:  # fmt: skip
    """Replace the value, the hosts or both (200). A missing secret is created when both
    are given (201), else 404."""
    value = None if body.value is None else body.value.get_secret_value()
    row, created = ctx(request).secrets.put(tenant.id, name, value, body.hosts)
    response.status_code = 201 if created else 200
    return _out(row)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_secret(name: str, request: Request, tenant: CurrentTenant) -> Response:
    """Delete a secret; requests that use it are refused from then on."""
    ctx(request).secrets.delete(tenant.id, name)
    return Response(status_code=204)
