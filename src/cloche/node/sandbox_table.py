"""The sandboxes one node knows, by id, each with its own lock.

Why it exists: the runtime and its collaborators (building, snapshotting, live changes,
the idle reaper) all read and change the same in-memory records and serialise the
changes of one sandbox on one lock; this is that shared table, and nothing else.
"""

from __future__ import annotations

import asyncio

from cloche.node.errors import SandboxNotFound
from cloche.node.records import SandboxRecord


class SandboxTable:
    def __init__(self) -> None:
        self.records: dict[str, SandboxRecord] = {}  # pooled ones included
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, sandbox_id: str) -> SandboxRecord:
        """A user's sandbox (SandboxNotFound for unknown and pooled ones)."""
        rec = self.records.get(sandbox_id)
        if rec is None or rec.pooled:
            raise SandboxNotFound(f"sandbox {sandbox_id} not found")
        return rec

    def users(self) -> list[SandboxRecord]:
        return [r for r in self.records.values() if not r.pooled]

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def forget_lock(self, sandbox_id: str) -> None:
        self._locks.pop(sandbox_id, None)
