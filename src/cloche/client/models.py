"""Typed models for the JSON objects the Cloche API returns.

All models are immutable pydantic models that ignore unknown fields, so a newer server
that adds fields does not break an older SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiKey",
    "ArchiveResult",
    "Entry",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStart",
    "Health",
    "NewTenant",
    "NodeInfo",
    "PoolInfo",
    "Resources",
    "SandboxInfo",
    "SandboxState",
    "SkippedMember",
    "Tenant",
    "WriteResult",
]

SandboxState = Literal["creating", "running", "paused", "stopped"]
"""The lifecycle states a sandbox can be in."""


class _Model(BaseModel):
    """Base for API models: frozen, ignores unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Health(_Model):
    """Answer of ``GET /healthz``."""

    status: str


class SandboxInfo(_Model):
    """A sandbox as the server describes it."""

    id: str
    state: str = Field(description="One of creating, running, paused, stopped.")
    name: str | None = None
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_s: float | None = Field(None, description="Idle/lifetime timeout in seconds.")
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    node: str | None = None


class ExecResult(_Model):
    """The outcome of a finished command (``POST /v1/sandboxes/{id}/exec``)."""

    exit_code: int | None
    signal: int | str | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out


class ExecStart(_Model):
    """First streamed event: the command started with process id ``pid``."""

    type: Literal["start"] = "start"
    pid: int | None = None


class ExecOutput(_Model):
    """A chunk of output; ``type`` says whether it came from stdout or stderr."""

    type: Literal["stdout", "stderr"]
    data: str


class ExecExit(_Model):
    """Last streamed event: the command finished."""

    type: Literal["exit"] = "exit"
    exit_code: int | None = None
    signal: int | str | None = None
    truncated: bool = False
    timed_out: bool = False


ExecEvent = Annotated[ExecStart | ExecOutput | ExecExit, Field(discriminator="type")]
"""One event of ``exec_stream``: :class:`ExecStart`, :class:`ExecOutput` or :class:`ExecExit`."""


class Entry(_Model):
    """A file-system entry inside a sandbox."""

    name: str
    path: str
    type: str = Field(description="One of file, dir, symlink, other.")
    size: int = 0
    mode: int = 0
    mtime: float = 0.0
    target: str | None = Field(None, description="Link target, for symlinks.")

    @property
    def is_dir(self) -> bool:
        """True for directories."""
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        """True for regular files."""
        return self.type == "file"


class WriteResult(_Model):
    """Answer of a file write: the normalized path and the bytes written."""

    path: str
    size: int


class SkippedMember(_Model):
    """An archive member the server refused to extract, and why."""

    name: str
    reason: str


class ArchiveResult(_Model):
    """Summary of an extracted tar upload."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[SkippedMember] = Field(default_factory=list)


class Tenant(_Model):
    """A tenant and its quotas (``None`` means unlimited / server default)."""

    id: str
    name: str
    max_sandboxes: int | None = None
    max_cpu: float | None = None
    max_memory_mb: int | None = None
    created_at: datetime | None = None


class NewTenant(_Model):
    """A freshly created tenant with its first API key (shown only once)."""

    id: str
    name: str
    api_key: str
    key_id: str | None = None


class ApiKey(_Model):
    """A freshly created API key (the secret is shown only once)."""

    id: str
    api_key: str


class Resources(_Model):
    """An amount of CPU and memory."""

    cpu: float = 0
    memory_mb: int = 0


class PoolInfo(_Model):
    """A node's warm pool for one template."""

    template: str
    ready: int = 0
    size: int = 0


class NodeInfo(_Model):
    """A worker node, its capacity and what is allocated on it."""

    id: str
    state: str
    capacity: Resources = Field(default_factory=Resources)
    allocated: Resources = Field(default_factory=Resources)
    sandboxes: int = 0
    pools: list[PoolInfo] = Field(default_factory=list)
