"""Agents that follow their user: each request's region is counted, and on the agent's
next wake it moves to the region its requests now mostly come from.

Why it exists: an agent placed near its user stays there when the user travels. Its
request regions are kept per sandbox in PostgreSQL (`SandboxRegions`), so whichever
replica wakes it decides alike; the decision is `cloche.geo.follow.follow_target`
(window, threshold, cooldown), taken only while the agent sleeps (hibernated, or on no
node), so a move never interrupts it: the wake it needed anyway becomes a move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from cloche.fleet.move import Mover, MoveReport
from cloche.geo.follow import FollowRule, follow_target
from cloche.node.errors import RuntimeFailure

log = logging.getLogger("cloche.fleet.follow")


class Follower:
    def __init__(self, mover: Mover, rule: FollowRule) -> None:
        self.mover = mover
        self.rule = rule

    async def __call__(self, sandbox_id: str, region: str | None, spec: dict[str, Any]) -> MoveReport | None:
        """Count a request from `region` (None: unknown) for the agent, and move it first
        if it sleeps and its requests say so (within the app's `regions`, if pinned)."""
        if self.mover.fleet.moving.active(sandbox_id):  # another replica moves it: it wakes where it lands
            return None
        try:
            asleep = self.mover.fleet.get(sandbox_id).state == "hibernated"
        except RuntimeFailure:
            return None
        if region is None and not asleep:  # nothing to count or decide: no database round trip
            return None
        row = self.mover.regions.get(sandbox_id)
        now = time.time()
        if region is not None:
            row.history.note(region, now)
            self.mover.regions.noted(sandbox_id, row.history)
        current = self.mover.region_of(sandbox_id)
        if not asleep or current is None:
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
