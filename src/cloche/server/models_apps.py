"""Request and response bodies of apps and their agents (routes/apps.py): deploying an
app, listing its agents, moving one to another region. Kept apart from models.py, whose
strictness (unknown fields rejected) and shared limits they reuse."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cloche.node.spec import MAX_CPU, MAX_DISK_MB, MAX_MEMORY_MB, MIN_CPU, MIN_DISK_MB, MIN_MEMORY_MB
from cloche.server.models import REGION_PATTERN, REGIONS_HELP, IdleBody, Regions, Strict


class AppDeploy(Strict):
    template: str | None = Field(None, max_length=63)
    command: list[str] = Field(
        ..., min_length=1, max_length=256, description="the agent's server; it must listen on $CLOCHE_AGENT_SOCKET"
    )
    cpu: float | None = Field(None, ge=MIN_CPU, le=MAX_CPU)
    memory_mb: int | None = Field(None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    disk_mb: int | None = Field(None, ge=MIN_DISK_MB, le=MAX_DISK_MB)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    setup: list[str] | str | None = Field(None, description="run once in each new instance before the server starts")
    idle: IdleBody | None = None
    max_concurrency: int = Field(1, ge=1, le=1024, description="concurrent invocations per key")
    startup_timeout_s: float = Field(30, gt=0, le=600)
    restart: Literal["on_request", "always"] = Field(
        "on_request",
        description="in a cluster, when an instance whose node was lost comes back: on its next "
        "request, or at once (always)",
    )
    regions: Regions = Field(default_factory=list, description=REGIONS_HELP)


class AppOut(BaseModel):
    name: str
    version: int
    created_at: float
    updated_at: float
    spec: AppDeploy


class AppList(BaseModel):
    items: list[AppOut]


class AgentOut(BaseModel):
    key: str
    app: str
    sandbox_id: str
    state: str
    node: str
    region: str = Field("", description='the region of its node ("" while it is on none)')
    home_region: str | None = Field(None, description="the region it was first placed in")
    app_version: int
    created_at: float
    last_active_at: float | None


class AgentList(BaseModel):
    items: list[AgentOut]


class AgentMove(BaseModel):
    region: str = Field(pattern=REGION_PATTERN, description="the region to move the agent to")


class AgentMoved(BaseModel):
    sandbox_id: str
    source: str | None = Field(description="the region it was in (null: unknown)")
    region: str
    node: str
    bytes_copied: int = Field(description="snapshot bytes copied to the region's store (only missing chunks)")
    chunks_copied: int
    seconds: float
    phases: dict[str, float] = Field(description="seconds in each step: hibernate (off its node), copy, resume")
