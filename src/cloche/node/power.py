"""Moving a sandbox between its resting and running states: stop, start, pause, resume, wake.

Why it exists: each move is a runtime change (runc, the disk, the cgroup) plus a record
saved and listeners told, taken under the sandbox's lock so two moves never interleave.
NodeRuntime decides which move a caller gets; this module makes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cloche.node import supervisor
from cloche.node.announce import Announcer
from cloche.node.errors import InvalidState
from cloche.node.protocol import ExecRequest
from cloche.node.provision import SandboxBuilder
from cloche.node.records import SandboxRecord

PrepareExec = Callable[[str, ExecRequest], tuple[str, ExecRequest]]


class PowerStates:
    """`prepare_exec` (reach.py) runs a sandbox's `on_resume` command after a start."""

    def __init__(self, builder: SandboxBuilder, announcer: Announcer, prepare_exec: PrepareExec) -> None:
        self.builder = builder
        self.table = builder.table
        self.records = builder.records
        self.announcer = announcer
        self.prepare_exec = prepare_exec

    async def _save(self, rec: SandboxRecord) -> None:
        await asyncio.to_thread(self.records.save, rec)

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        """Kill the sandbox's processes and release its resources; keep its files."""
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state != "stopped":
                await self.announcer.stopped(sandbox_id)
                await asyncio.to_thread(self.builder.teardown, sandbox_id)
                rec.state = "stopped"
                await self._save(rec)
            return rec

    async def start(self, sandbox_id: str) -> SandboxRecord:
        """Start a stopped or hibernated sandbox again (same id, limits, env and files):
        on its own disk when the node still holds it, else from its snapshot."""
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state in ("stopped", "hibernated"):
                try:
                    await asyncio.to_thread(self.builder.provision_and_run, rec, False)
                except BaseException:
                    await asyncio.to_thread(self.builder.teardown, sandbox_id)
                    raise
                rec.state = "running"
                rec.last_active_at = time.time()
                await self._save(rec)
                await self.announcer.started(rec)
                if rec.spec.on_resume:
                    request = ExecRequest(cmd=["/bin/sh", "-c", rec.spec.on_resume], detach=True)
                    session = await supervisor.open_session(*self.prepare_exec(rec.id, request))
                    await session.close()
            return rec

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state == "paused":
                return rec
            if rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; only a running one pauses")
            await asyncio.to_thread(self.builder.driver(rec).pause, sandbox_id)
            rec.state = "paused"
            await self._save(rec)
            return rec

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state == "paused":
                await asyncio.to_thread(self.builder.driver(rec).resume, sandbox_id)
                rec.state = "running"
                rec.last_active_at = time.time()
                await self._save(rec)
            elif rec.state != "running":
                raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; it cannot be resumed")
            return rec

    async def wake(self, sandbox_id: str) -> SandboxRecord:
        """Whatever state the sandbox sleeps in, make it running (waking is transparent)."""
        rec = self.table.get(sandbox_id)
        if rec.state == "paused":
            return await self.resume(sandbox_id)
        if rec.state in ("stopped", "hibernated"):
            return await self.start(sandbox_id)
        return rec
