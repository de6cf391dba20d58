"""Agents that follow their user: each request's region is counted, and on the agent's
next wake it moves to the region its requests now mostly come from.

Why it exists: an agent placed near its user stays there when the user travels. Its
request regions are kept per sandbox in PostgreSQL (`SandboxRegions`), so whichever
replica wakes it decides alike; the decision is `cloche.geo.follow.follow_target`
(window, threshold, cooldown), taken only while the agent sleeps (hibernated, or on no
node), so a move never interrupts it: the wake it needed anyway becomes a move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

from cloche.fleet.move import Mover, MoveReport
from cloche.fleet.sandbox_regions import SandboxRegion
from cloche.geo.follow import FollowRule, follow_target
from cloche.node.errors import RuntimeFailure

log = logging.getLogger("cloche.fleet.follow")


class Follower:
    def __init__(self, mover: Mover, rule: FollowRule) -> None:
        self.mover = mover
        self.rule = rule
        self._counting: set[asyncio.Task[None]] = set()  # one task per sandbox with requests to count
        self._pending: dict[str, list[tuple[str, float]]] = {}  # sandbox id -> (region, when) not yet written

    def _later(self, sandbox_id: str, region: str) -> None:
        """Count a request of an awake agent off the request's path: one task per sandbox
        writes what piled up meanwhile in one go, so a burst of requests is a few
        PostgreSQL writes in a thread, not one each."""
        queued = self._pending.get(sandbox_id)
        if queued is not None:
            queued.append((region, time.time()))
            return
        self._pending[sandbox_id] = [(region, time.time())]
        task = asyncio.create_task(self._count(sandbox_id))
        self._counting.add(task)
        task.add_done_callback(self._counting.discard)

    async def _count(self, sandbox_id: str) -> None:
        try:
            while notes := self._pending[sandbox_id]:
                self._pending[sandbox_id] = []
                await asyncio.to_thread(self._note, sandbox_id, notes)
        except Exception:  # a request's region left uncounted is no reason to fail anything
            log.exception("could not count the requests of sandbox %s", sandbox_id)
        finally:
            self._pending.pop(sandbox_id, None)

    def _note(self, sandbox_id: str, notes: list[tuple[str, float]]) -> SandboxRegion:
        """The agent's row, with the requests in `notes` counted (read and written in
        PostgreSQL: off the event loop, and for an awake agent off the request's path)."""
        row = self.mover.regions.get(sandbox_id)
        if notes:
            for region, at in notes:
                row.history.note(region, at)
            self.mover.regions.noted(sandbox_id, row.history)
        return row

    async def __call__(self, sandbox_id: str, region: str | None, spec: dict[str, Any]) -> MoveReport | None:
        """Count a request from `region` (None: unknown) for the agent, and move it first
        if it sleeps and its requests say so (within the app's `regions`, if pinned)."""
        if self.mover.fleet.moving.active(sandbox_id):  # another replica moves it: it wakes where it lands
            return None
        try:
            asleep = self.mover.fleet.get(sandbox_id).state == "hibernated"
        except RuntimeFailure:
            return None
        if not asleep:  # nothing to decide: the request goes on while its region is counted
            if region is not None:
                self._later(sandbox_id, region)
            return None
        row = await asyncio.to_thread(self._note, sandbox_id, [] if region is None else [(region, time.time())])
        now = time.time()
        current = self.mover.region_of(sandbox_id)
        if current is None:
            return None
        allowed: Collection[str] | None = spec.get("regions") or None
        target = follow_target(row.history, current, self.rule, now, row.last_move_at, allowed)
        if target is None or target not in self.mover.live_regions():
            return None
        try:
            return await self.mover.move(sandbox_id, target)
        except Exception:  # it wakes where it is (or was parked): following is worth no failed request
            log.exception("sandbox %s could not follow its user to %s", sandbox_id, target)
            return None
