"""Service and admin endpoints: health, tenants and their keys, templates, nodes.

All but ``health`` need the admin key; they are what ``cloche tenants``, ``templates`` and
``nodes`` and the admin parts of the SDK send.
"""

from __future__ import annotations

from urllib.parse import quote

from .._wire import compact
from ..models import ApiKey, Health, NewTenant, NodeInfo, TemplateInfo, Tenant
from .call import TRANSFER_TIMEOUT, Body, Call
from .responses import parse_items, parse_json, parse_none


def health() -> Call[Health]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", parse_json(Health))


def create_tenant(
    name: str,
    *,
    max_sandboxes: int | None = None,
    max_cpu: float | None = None,
    max_memory_mb: int | None = None,
) -> Call[NewTenant]:
    """``POST /v1/tenants`` (admin)."""
    body = compact(name=name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
    return Call("POST", "/v1/tenants", parse_json(NewTenant), json=body)


def list_tenants() -> Call[list[Tenant]]:
    """``GET /v1/tenants`` (admin)."""
    return Call("GET", "/v1/tenants", parse_items(Tenant))


def create_key(tenant_id: str) -> Call[ApiKey]:
    """``POST /v1/tenants/{id}/keys`` (admin)."""
    return Call("POST", f"/v1/tenants/{quote(tenant_id, safe='')}/keys", parse_json(ApiKey))


def revoke_key(tenant_id: str, key_id: str) -> Call[None]:
    """``DELETE /v1/tenants/{id}/keys/{key_id}`` (admin)."""
    return Call("DELETE", f"/v1/tenants/{quote(tenant_id, safe='')}/keys/{quote(key_id, safe='')}", parse_none)


def list_templates() -> Call[list[TemplateInfo]]:
    """``GET /v1/templates``."""
    return Call("GET", "/v1/templates", parse_items(TemplateInfo))


def import_template(name: str, archive: Body, on_base: bool = False) -> Call[TemplateInfo]:
    """``PUT /v1/templates/{name}`` (admin): a rootfs tarball, optionally over `base`."""
    return Call("PUT", f"/v1/templates/{quote(name, safe='')}", parse_json(TemplateInfo),
                params={"on_base": "true"} if on_base else None, content=archive,
                content_type="application/x-tar", read_timeout=TRANSFER_TIMEOUT)  # fmt: skip


def delete_template(name: str) -> Call[None]:
    """``DELETE /v1/templates/{name}`` (admin)."""
    return Call("DELETE", f"/v1/templates/{quote(name, safe='')}", parse_none)


def list_nodes() -> Call[list[NodeInfo]]:
    """``GET /v1/nodes`` (admin)."""
    return Call("GET", "/v1/nodes", parse_items(NodeInfo))
