"""A sandbox as the API describes it: its state, idle policy and snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .base import ApiModel
from .network import NetworkStatus

SandboxState = Literal["creating", "running", "paused", "hibernated", "stopped"]
"""The lifecycle states a sandbox can be in."""


class IdlePolicy(ApiModel):
    """When an idle sandbox goes to sleep: no exec, file or API activity for this long.

    ``None`` leaves that step out (never paused, or never hibernated).
    """

    pause_after_s: float | None = Field(None, description="Freeze the processes after this many idle seconds.")
    hibernate_after_s: float | None = Field(
        None,
        description="Snapshot the files and release CPU and memory after this many idle seconds.",
    )


class Recovery(ApiModel):
    """A sandbox's last loss of its node: it resumed on another node from its last
    checkpoint, losing the work done after it."""

    lost_at: datetime
    lost_work_s: float | None = Field(None, description="Seconds of work since the checkpoint, lost with the node.")
    checkpoint_at: datetime | None = Field(None, description="When that checkpoint was taken (None: none was).")


class SandboxInfo(ApiModel):
    """A sandbox as the server describes it."""

    id: str
    state: str = Field(description="One of creating, running, paused, hibernated, stopped.")
    name: str | None = None
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_s: float | None = Field(None, description="Idle/lifetime timeout in seconds.")
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_active_at: datetime | None = Field(None, description="Last exec, file or API activity.")
    idle: IdlePolicy = Field(default_factory=IdlePolicy)
    on_timeout: str | None = Field(None, description="What happens at the timeout: kill or hibernate.")
    on_resume: str | None = Field(None, description="Shell command run after waking from stopped or hibernated.")
    node: str | None = Field(None, description='The node it runs on ("local" on one machine; "" while on none).')
    recovery: Recovery | None = Field(None, description="Its last loss of a node, in a cluster (None: never).")
    region: str | None = Field(None, description='The region of its node ("" while on none).')
    home_region: str | None = Field(None, description="The region it was first placed in.")
    regions: list[str] = Field(default_factory=list, description="The regions it is pinned to (data residency).")
    isolation: str | None = Field(None, description='"runc" or "gvisor" (runsc, a user-space kernel).')
    placement: dict[str, Any] | None = Field(
        None,
        description="Why the scheduler chose this node (free-form; absent without a scheduler).",
    )
    network: NetworkStatus | None = Field(
        None,
        description="Network policy and address (counters only when fetched alone, see ``network()``).",
    )


class SnapshotInfo(ApiModel):
    """A named snapshot of a sandbox's files; new sandboxes can start from it."""

    id: str
    name: str
    sandbox_id: str = Field(description="The sandbox it was taken from.")
    template: str | None = None
    bytes: int = Field(0, description="Size of the files it holds.")
    created_at: datetime | None = None
