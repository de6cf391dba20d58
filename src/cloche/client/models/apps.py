"""Apps, their agents, and an agent's own answer to an invocation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import Field

from .base import ApiModel
from .sandboxes import IdlePolicy


class AppSpec(ApiModel):
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
    restart: str = Field("on_request", description='In a cluster, "always" brings a lost node\'s agents back at once.')
    regions: list[str] = Field(
        default_factory=list, description="Data residency: its agents run only in these regions."
    )


class App(ApiModel):
    """A deployed app; ``version`` goes up with every deploy."""

    name: str
    version: int
    spec: AppSpec
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentInfo(ApiModel):
    """One agent: the instance of an app that serves one key (one user)."""

    key: str
    app: str
    sandbox_id: str
    state: str = Field(description="Its sandbox's state (running, paused, hibernated, ...; deleted if gone).")
    node: str | None = None
    region: str = Field("", description="The region of its node (the header ``cloche-region`` of its answers).")
    home_region: str | None = Field(None, description="The region it was first placed in.")
    app_version: int = Field(0, description="The app version the instance runs.")
    created_at: datetime | None = None
    last_active_at: datetime | None = None


class AgentMove(ApiModel):
    """An agent's move to another region: where from and to, and what it cost."""

    sandbox_id: str
    source: str | None = Field(None, description="The region it was in (None: unknown).")
    region: str
    node: str = Field("", description="The node it runs on now.")
    bytes_copied: int = Field(0, description="Snapshot bytes copied to the region's store (only missing chunks).")
    chunks_copied: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = Field(default_factory=dict, description="Seconds per step: hibernate, copy, resume.")


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
            from ..errors import AgentError

            raise AgentError(self.status_code, self.text[:500])
        return self
