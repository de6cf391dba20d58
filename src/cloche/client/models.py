"""Typed models for the JSON objects the Cloche API returns.

All models are immutable pydantic models that ignore unknown fields, so a newer server
that adds fields does not break an older SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentInfo",
    "AgentResponse",
    "ApiKey",
    "App",
    "AppSpec",
    "ArchiveResult",
    "BatchResult",
    "Entry",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStart",
    "Health",
    "IdlePolicy",
    "KeyInfo",
    "KeyPage",
    "LogEntry",
    "LogPage",
    "NewTenant",
    "NodeInfo",
    "PoolInfo",
    "Resources",
    "SandboxInfo",
    "SandboxState",
    "SkippedMember",
    "SnapshotInfo",
    "StateValue",
    "Tenant",
    "WriteResult",
]

SandboxState = Literal["creating", "running", "paused", "hibernated", "stopped"]
"""The lifecycle states a sandbox can be in."""


class _Model(BaseModel):
    """Base for API models: frozen, ignores unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Health(_Model):
    """Answer of ``GET /healthz``."""

    status: str


class IdlePolicy(_Model):
    """When an idle sandbox goes to sleep: no exec, file or API activity for this long.

    ``None`` leaves that step out (never paused, or never hibernated).
    """

    pause_after_s: float | None = Field(None, description="Freeze the processes after this many idle seconds.")
    hibernate_after_s: float | None = Field(
        None, description="Snapshot the files and release CPU and memory after this many idle seconds."
    )


class SandboxInfo(_Model):
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
    node: str | None = None
    placement: dict[str, Any] | None = Field(
        None, description="Why the scheduler chose this node (free-form; absent without a scheduler)."
    )


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


class TemplateInfo(_Model):
    """A template sandboxes can be created from."""

    name: str
    on_base: bool = False


class NodeInfo(_Model):
    """A worker node, its capacity and what is allocated on it."""

    id: str
    state: str
    capacity: Resources = Field(default_factory=Resources)
    allocated: Resources = Field(default_factory=Resources)
    sandboxes: int = 0
    pools: list[PoolInfo] = Field(default_factory=list)


class SnapshotInfo(_Model):
    """A named snapshot of a sandbox's files; new sandboxes can start from it."""

    id: str
    name: str
    sandbox_id: str = Field(description="The sandbox it was taken from.")
    template: str | None = None
    bytes: int = Field(0, description="Size of the files it holds.")
    created_at: datetime | None = None


class AppSpec(_Model):
    """What an app runs in each of its agents' sandboxes (see ``client.apps.deploy``)."""

    command: list[str]
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    setup: list[str] | str | None = None
    idle: IdlePolicy | None = None
    max_concurrency: int = 1
    startup_timeout_s: float = 30


class App(_Model):
    """A deployed app; ``version`` goes up with every deploy."""

    name: str
    version: int
    spec: AppSpec
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentInfo(_Model):
    """One agent: the instance of an app that serves one key (one user)."""

    key: str
    app: str
    sandbox_id: str
    state: str = Field(description="Its sandbox's state (running, paused, hibernated, ...; deleted if gone).")
    node: str | None = None
    app_version: int = Field(0, description="The app version the instance runs.")
    created_at: datetime | None = None
    last_active_at: datetime | None = None


class StateValue(_Model):
    """A KV value with its version (``put(..., if_match=version)`` for compare-and-set)."""

    key: str
    value: bytes
    version: int
    expires_at: datetime | None = Field(None, description="When a key written with a TTL expires.")

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode()

    def json(self) -> Any:
        """The value parsed as JSON."""
        return json.loads(self.value)


class KeyInfo(_Model):
    """A live key in a listing."""

    key: str
    version: int
    size: int


class KeyPage(_Model):
    """One page of a key listing; pass ``next_cursor`` back for the next (``None``: the last)."""

    items: list[KeyInfo]
    next_cursor: str | None = None


class BatchResult(_Model):
    """The outcome of one operation of an atomic batch."""

    op: str
    key: str
    version: int | None = Field(
        None, description="put: the new version; delete: the tombstone's; check: the current one."
    )
    existed: bool = Field(True, description="delete and check: whether the key existed.")


class LogEntry(_Model):
    """One entry of a namespace's append-only log."""

    seq: int
    data: bytes

    @property
    def text(self) -> str:
        """The entry decoded as UTF-8."""
        return self.data.decode()


class LogPage(_Model):
    """Log entries after a sequence number, oldest first.

    Attributes:
        last_seq: The newest sequence number in the log (0 when empty); read on with
            ``after=items[-1].seq`` while ``items`` is not empty.
        first_seq: The oldest sequence number still kept (entries before it were trimmed).
    """

    items: list[LogEntry]
    last_seq: int = 0
    first_seq: int = 0


@dataclass(frozen=True)
class AgentResponse:
    """An agent's answer to an invocation, as the agent sent it (like ``httpx.Response``).

    Attributes:
        status_code: The agent's HTTP status.
        headers: The agent's response headers (case-insensitive).
        content: The whole body.
    """

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def status(self) -> int:
        """Alias of :attr:`status_code`."""
        return self.status_code

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as text (UTF-8 unless the agent named a charset)."""
        charset = httpx.Response(self.status_code, headers=self.headers).charset_encoding or "utf-8"
        return self.content.decode(charset, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    def raise_for_status(self) -> AgentResponse:
        """Raise :class:`~cloche.client.errors.AgentError` unless the status is 2xx; return self."""
        if not self.ok:
            from .errors import AgentError

            raise AgentError(self.status_code, self.text[:500])
        return self
