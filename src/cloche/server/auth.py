"""Bearer-key authentication and the per-tenant rate limit, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloche.control.errors import ApiError
from cloche.server.access import note
from cloche.server.context import Context, ctx
from cloche.store.db import Tenant


def _key_from(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        token = request.query_params.get("token")
        if token and request.scope["type"] == "websocket":
            return token
    return bearer_key(header)


def bearer_key(header: str | None) -> str:
    """The key of an `Authorization: Bearer KEY` header (401 when missing or malformed)."""
    if header is None:
        raise ApiError(401, "unauthorized", "missing Authorization header (expected 'Bearer KEY')")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "malformed Authorization header (expected 'Bearer KEY')")
    return key.strip()


async def authenticate(request: Request) -> Tenant:
    """Async on purpose: a plain `def` dependency would run in FastAPI's thread pool,
    which costs more than the lookup itself on every request."""
    return authenticate_now(request)


def authenticate_now(request: Request) -> Tenant:
    return authenticate_key(request, _key_from(request))


def authenticate_key(request: Request, key: str) -> Tenant:
    """The key's tenant, noted in the access log; E2B's API comes here with the key from
    its own header."""
    tenant = tenant_for_key(ctx(request), key)
    note(request.scope, tenant_id=tenant.id)
    return tenant


def tenant_for_key(c: Context, key: str) -> Tenant:
    """The key's tenant, after the rate limit: the one lookup every API and the dashboard share."""
    tenant = c.store.authenticate(key)
    if tenant is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    c.limiter.check(tenant.id)
    return tenant


async def admin(tenant: Annotated[Tenant, Depends(authenticate)]) -> Tenant:
    if not tenant.is_admin:
        raise ApiError(403, "forbidden", "this operation needs the admin key")
    return tenant


CurrentTenant = Annotated[Tenant, Depends(authenticate)]
Admin = Annotated[Tenant, Depends(admin)]
