"""The leader's copy of each sandbox's latest checkpoint in a second region's store.

Why it exists: a region's checkpoints live in that region's store; losing the whole
region (its nodes, its store) would lose its sandboxes. After each checkpoint the
leader copies it (only the chunks missing there) to the nearest other region's store,
so a sandbox whose region is gone resumes elsewhere having lost at most about one
checkpoint interval (`Mover.adopt_lost`). A sandbox pinned to regions (its spec's
`regions`, an app's agents' among them) is copied only to another of its regions, and
not at all if it has one.
Each pass also records which region holds each sandbox's checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cloche.fleet.move import Mover

log = logging.getLogger("cloche.fleet.replicate")


@dataclass(frozen=True)
class Checkpoint:
    sandbox_id: str
    node: str
    manifest: str
    at: float
    pinned: tuple[str, ...] | None  # the app's regions (None: any)


class Replicator:
    def __init__(self, mover: Mover) -> None:
        self.mover = mover
        self._handled: dict[str, str] = {}  # sandbox id -> the checkpoint last replicated (or found unneeded)
        self.bytes_copied = 0

    def _checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(p.sandbox_id, p.node, p.checkpoint, p.checkpoint_at or 0.0, p.record.spec.regions or None)
                for p in self.mover.fleet.placements.checkpointed_live()]  # fmt: skip

    def target(self, home: str, pinned: tuple[str, ...] | None) -> str | None:
        """The region nearest `home` with a store of its own that may hold the replica."""
        stores = self.mover.stores
        known = set(stores.urls) | self.mover.live_regions()
        candidates = {r for r in known if not stores.shared(r, home) and (pinned is None or r in pinned)}
        return self.mover.nearest(home, candidates) if candidates else None

    async def replicate(self) -> int:
        """Copy each checkpoint not copied yet; how many were."""
        copied = 0
        for c in self._checkpoints():
            member = self.mover.fleet.members.get(c.node)
            if self._handled.get(c.sandbox_id) == c.manifest or member is None:
                continue
            home = member.info.region
            self.mover.regions.record(c.sandbox_id, home)
            target = self.target(home, c.pinned)
            if target is not None:
                try:
                    report = await asyncio.to_thread(self.mover.stores.copy, c.manifest, home, target)
                except Exception as e:  # the other region's store may be down: try again next pass
                    log.warning("replica of %s's checkpoint to %s failed: %s", c.sandbox_id, target, e)
                    continue
                self.mover.regions.replicated(c.sandbox_id, target, c.manifest, c.at)
                log.info("checkpoint of %s replicated from %s to %s (%d bytes copied)", c.sandbox_id, home, target,
                         report.bytes_copied)  # fmt: skip
                self.bytes_copied += report.bytes_copied
                copied += 1
            self._handled[c.sandbox_id] = c.manifest
        return copied
