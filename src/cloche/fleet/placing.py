"""Placement and recovery: which node a sandbox starts on, and its resume after a loss.

Why it exists: a new sandbox, a lost one woken again and one a drain or a region move
takes off its node all need a live node chosen the same way (latency-aware, keeping
data residency: fleet/scoring.py) and the same bookkeeping after (its placement, its
home region). A sandbox being moved between nodes is held (`recovering`, `Moving`) so
that requests for it wait rather than wake it where it is leaving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from cloche.cluster.etcd import Etcd
from cloche.fleet import scoring, where
from cloche.fleet.members import Member
from cloche.fleet.placements import Placement, PlacementTable
from cloche.fleet.routing import FleetRouting
from cloche.node.errors import NodeUnreachable, SandboxNotFound
from cloche.node.records import SandboxRecord
from cloche.node.spec import SandboxSpec
from cloche.scheduler.errors import NoCapacity

log = logging.getLogger("cloche.fleet")


class FleetPlacing(FleetRouting):
    """The routed members, with sandboxes placed on them and resumed after a loss."""

    def __init__(self, etcd: Etcd, cluster_dir: Path, placements: PlacementTable) -> None:
        super().__init__(etcd, cluster_dir, placements)
        self._recovering: dict[str, asyncio.Lock] = {}
        # resumes a sandbox that is on no node (None: `adopt` on any node); with a snapshot
        # store per region, `Mover.adopt_lost` resumes it in the region that holds its files
        self.adopt_lost: Callable[[Placement], Awaitable[SandboxRecord]] | None = None
        self._placing: dict[str, float] = {}  # node id -> MB of the sandboxes being placed there now
        self.matrix = scoring.fleet_matrix  # the region-to-region RTTs placement scores with
        # makes a snapshot readable in a region before a sandbox starts from it there
        # (None: one store for all regions); `Mover.carry` copies it from the region that has it
        self.carry: Callable[[str, str], Awaitable[None]] | None = None

    def choose(self, spec: SandboxSpec, avoid: Collection[str] = (), near: str | None = None) -> Member:
        """The member for `spec` (not draining, not in `avoid`, of its isolation and pinned
        regions) closest to `near` (the user's region) with the most room (fleet/scoring.py)."""
        fits = [m for m in self.members.values()
                if m.node_id not in self.draining and m.node_id not in avoid
                and (not m.info.isolation or spec.isolation in m.info.isolation)]  # fmt: skip
        if not fits and not spec.regions:
            raise NoCapacity(f"no live node can take a {spec.isolation} sandbox "
                             f"({len(self.members)} live, {len(self.draining)} draining)", retry_after_s=1)  # fmt: skip
        candidates = [self._candidate(m) for m in fits]
        best = scoring.pick(candidates, spec.limits.memory_mb, near, spec.regions, self.matrix())
        return self.members[best.node_id]

    def _candidate(self, m: Member) -> scoring.Candidate:
        used = sum(r.spec.limits.memory_mb for r in m.remote.list() if r.state in ("running", "paused"))
        return scoring.Candidate(m.node_id, m.info.region, used + self._placing.get(m.node_id, 0.0), m.info.capacity)

    def regions(self) -> set[str]:
        """The regions of the live nodes."""
        return {m.info.region for m in self.members.values() if m.info.region}

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True,
                     snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        async def make(member: Member) -> SandboxRecord:
            if snapshot is not None and self.carry is not None:
                await self.carry(snapshot, member.info.region)
            return await member.remote.create(spec, use_pool=use_pool, snapshot=snapshot)

        return await self._place(spec, make)

    async def adopt(self, lost: SandboxRecord, snapshot: str | None, avoid: Collection[str] = ()) -> SandboxRecord:
        rec = await self._place(lost.spec, lambda m: m.remote.adopt(lost, snapshot), avoid)
        self._lost.pop(rec.id, None)
        return rec

    async def _place(self, spec: SandboxSpec, make: Callable[[Member], Awaitable[SandboxRecord]],
                     avoid: Collection[str] = ()) -> SandboxRecord:  # fmt: skip
        """Make the sandbox on the best member for it (not in `avoid`; close to the
        request's user, fleet/scoring.py); on the next one when that one does not answer
        (it may be stopping: it leaves etcd a moment after it stops). The node's region is
        its home now (`SandboxRegions`: its snapshots go to that region's store)."""
        tried: set[str] = set(avoid)
        while True:
            member = self.choose(spec, tried, where.user_region())
            self._placing[member.node_id] = self._placing.get(member.node_id, 0.0) + spec.limits.memory_mb
            try:
                rec = await make(member)
            except NodeUnreachable as e:
                log.warning("placing on %s failed (%s); trying another node", member.node_id, e)
                tried.add(member.node_id)
                continue
            finally:
                self._placing[member.node_id] -= spec.limits.memory_mb
            self.placements.place(member.node_id, rec)
            if member.info.region:
                self.homes.record(rec.id, member.info.region)
                self._homes[rec.id] = member.info.region
            where.served_in(member.info.region)
            return rec

    def recovering(self, sandbox_id: str) -> asyncio.Lock:
        """Held while the sandbox moves between nodes (a resume, a drain's or a region move)."""
        return self._recovering.setdefault(sandbox_id, asyncio.Lock())

    async def _settled(self, sandbox_id: str) -> None:
        """Wait while the sandbox moves (its node would wake it where it is leaving): between
        nodes here, or to another region by any replica."""
        await self.moving.wait(sandbox_id)
        lock = self._recovering.get(sandbox_id)
        if lock is not None and lock.locked():
            async with lock:
                pass

    async def _recover(self, sandbox_id: str) -> SandboxRecord:
        """Resume a lost sandbox on a live node from its last checkpoint."""
        async with self.recovering(sandbox_id):
            if self.node_of(sandbox_id) is not None:  # another request brought it back meanwhile
                return await self._remote(sandbox_id).wake(sandbox_id)
            placement = self.placements.get(sandbox_id)
            if placement is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            if not placement.away and placement.node in self.members:
                where.served_in(self.members[placement.node].info.region)
                return await self.members[placement.node].remote.wake(sandbox_id)
            started = time.monotonic()
            if self.adopt_lost is None:
                rec = await self.adopt(placement.record, placement.checkpoint)
            else:
                rec = await self.adopt_lost(placement)
            log.info("sandbox %s resumed on %s from checkpoint %s in %.2f s (lost %.1f s of work)", sandbox_id,
                     self.node_of(sandbox_id), placement.checkpoint, time.monotonic() - started,
                     placement.lost_work_s or 0.0)  # fmt: skip
            return rec
