"""What a sandbox create asks for, spelled once: the native API's body, an app's agent
and E2B's create each build a `CreateRequest` and hand it to `SandboxService.create`,
so adding an option is one field here, not an argument threaded through every caller.
Absent fields take the server's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreateRequest:
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_s: float | None = None
    name: str | None = None  # a create by name is idempotent: the tenant's sandbox of that name
    metadata: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    idle: dict[str, float | None] | None = None  # pause_after_s, hibernate_after_s
    on_timeout: str = "kill"  # or hibernate
    on_resume: str | None = None
    snapshot: str | None = None  # a named snapshot to start from
    wait_s: float | None = None  # how long to queue for room (None: the server's create_wait_s)
    region: str | None = None  # the user's region (else the request's: fleet/where.py)
    regions: Sequence[str] = ()  # data residency: only nodes in these regions (cluster mode)
    network: str | dict[str, Any] | None = None
    isolation: str | None = None
