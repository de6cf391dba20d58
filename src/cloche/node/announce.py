"""Telling node-local services and control when a sandbox starts or stops serving.

Why it exists: two kinds of audience hang off the same two events. Node-local
services (the in-sandbox state socket) need the sandbox's host directory, bound at
/.cloche/host inside it; control's subscribers get plain records only, as they would
across a network. Keeping both lists here keeps that difference in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cloche.node.api import SandboxEvents
from cloche.node.records import SandboxRecord


class SandboxListener(Protocol):
    """Told when a sandbox starts serving its user and when it stops. Services that
    reach into sandboxes (the in-sandbox state socket) hang off these events; the
    host directory is bound at /.cloche/host inside the sandbox."""

    async def sandbox_started(self, record: SandboxRecord, host_dir: Path) -> None: ...

    async def sandbox_stopped(self, sandbox_id: str) -> None: ...


class Announcer:
    def __init__(self, host_dir: Callable[[str], Path]) -> None:
        self._host_dir = host_dir
        self.listeners: list[SandboxListener] = []  # node-local services (they get the host directory)
        self.subscribers: list[SandboxEvents] = []

    async def started(self, rec: SandboxRecord) -> None:
        for listener in self.listeners:
            await listener.sandbox_started(rec, self._host_dir(rec.id))
        for subscriber in self.subscribers:
            await subscriber.sandbox_started(rec)

    async def stopped(self, sandbox_id: str) -> None:
        for listener in self.listeners:
            await listener.sandbox_stopped(sandbox_id)
        for subscriber in self.subscribers:
            await subscriber.sandbox_stopped(sandbox_id)
