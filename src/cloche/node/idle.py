"""The idle policy: each second, sandboxes past their timeout or quiet for too long are
hibernated, paused or killed, as their spec's `idle` says.

Why it exists: the policy is a background loop over every sandbox that only decides and
then calls the lifecycle's own verbs; apart from them it reads no host state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from cloche.node.api import ExpireCallback
from cloche.node.errors import SandboxNotFound
from cloche.node.records import SandboxRecord
from cloche.node.sandbox_table import SandboxTable

log = logging.getLogger("cloche.node")


class IdleActions(Protocol):
    """The lifecycle verbs the policy applies (the NodeRuntime's)."""

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord: ...

    async def pause(self, sandbox_id: str) -> SandboxRecord: ...

    async def kill(self, sandbox_id: str) -> None: ...


class IdleReaper:
    def __init__(self, table: SandboxTable, actions: IdleActions) -> None:
        self.table = table
        self.actions = actions
        self.expired: list[ExpireCallback] = []  # told of each sandbox killed by its timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._reap())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for rec in list(self.table.records.values()):
                if rec.pooled or rec.state == "creating":
                    continue  # a create in flight is finished first; its timeout applies after
                try:
                    await self.apply(rec, time.time())
                except SandboxNotFound:
                    continue
                except Exception:
                    log.exception("idle policy for %s failed", rec.id)

    async def apply(self, rec: SandboxRecord, now: float) -> None:
        idle = rec.spec.idle
        if rec.expires_at and rec.expires_at <= now:
            log.info("sandbox %s reached its timeout (%s)", rec.id, idle.on_timeout)
            if idle.on_timeout == "hibernate":
                rec.expires_at = None
                await self.actions.hibernate(rec.id)
            else:
                await self.actions.kill(rec.id)
                for callback in self.expired:
                    callback(rec.id)
            return
        quiet = now - rec.last_active_at
        if idle.hibernate_after_s and quiet >= idle.hibernate_after_s and rec.state in ("running", "paused"):
            await self.actions.hibernate(rec.id)
        elif idle.pause_after_s and quiet >= idle.pause_after_s and rec.state == "running":
            await self.actions.pause(rec.id)
