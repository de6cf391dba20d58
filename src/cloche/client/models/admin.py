"""The service and its operators' view: health, tenants and keys, templates, nodes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from .base import ApiModel


class Health(ApiModel):
    """Answer of ``GET /healthz``."""

    status: str


class Tenant(ApiModel):
    """A tenant and its quotas (``None`` means unlimited / server default)."""

    id: str
    name: str
    max_sandboxes: int | None = None
    max_cpu: float | None = None
    max_memory_mb: int | None = None
    created_at: datetime | None = None


class NewTenant(ApiModel):
    """A freshly created tenant with its first API key (shown only once)."""

    id: str
    name: str
    api_key: str
    key_id: str | None = None


class ApiKey(ApiModel):
    """A freshly created API key (the secret is shown only once)."""

    id: str
    api_key: str


class Resources(ApiModel):
    """An amount of CPU and memory."""

    cpu: float = 0
    memory_mb: int = 0


class PoolInfo(ApiModel):
    """A node's warm pool for one template."""

    template: str
    ready: int = 0
    size: int = 0


class TemplateInfo(ApiModel):
    """A template sandboxes can be created from."""

    name: str
    on_base: bool = False


class NodeInfo(ApiModel):
    """A worker node, its capacity and what is allocated on it."""

    id: str
    state: str
    capacity: Resources = Field(default_factory=Resources)
    allocated: Resources = Field(default_factory=Resources)
    sandboxes: int = 0
    pools: list[PoolInfo] = Field(default_factory=list)
