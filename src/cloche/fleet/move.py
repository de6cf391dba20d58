"""Moving a sandbox to another region, and resuming one in the region its files are in.

Why it exists: with a snapshot store per region a node reads only its own region's, so
a sandbox cannot simply wake on any node. A move (`POST .../agents/{key}/move`, or an
agent following its user) hibernates it where it is with its files uploaded, removes it
from that node, copies the chunks the target region's store lacks and resumes it on a
node there. A lost or parked sandbox resumes in the region whose store holds its last
checkpoint; if that region has no live node left, from the replica of its checkpoint
the leader keeps in another region (`fleet/replicate.py`).

The one-instance guarantee holds throughout: the sandbox is removed from its node
before any other node adopts it, and the adopting node claims it in etcd. The move
holds the fleet's per-sandbox lock and marks itself in etcd (`fleet/moving.py`), so the
requests for it that arrive meanwhile, on any replica, wait for it (`Fleet.wake`) and
are then served on the new node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from cloche.fleet.fleet import Fleet
from cloche.fleet.members import Member
from cloche.fleet.placements import Placement
from cloche.fleet.sandbox_regions import SandboxRegions
from cloche.node.errors import SandboxNotFound
from cloche.node.records import SandboxRecord
from cloche.scheduler.errors import NoCapacity
from cloche.scheduler.scorers.latency import LatencyMatrix
from cloche.snapshots.regions import CopyReport, RegionStores

log = logging.getLogger("cloche.fleet.move")


@dataclass(frozen=True)
class MoveReport:
    sandbox_id: str
    source: str | None  # the region it was in (None: unknown, it never ran on a node with one)
    region: str
    node: str
    bytes_copied: int
    chunks_copied: int
    seconds: float
    phases: dict[str, float]  # seconds in each step: off the node (hibernate), copy, resume


class Mover:
    def __init__(self, fleet: Fleet, stores: RegionStores, regions: SandboxRegions, matrix: LatencyMatrix) -> None:
        self.fleet = fleet
        self.stores = stores
        self.regions = regions
        self.matrix = matrix
        self.moves = 0
        self.bytes_copied = 0

    def live_regions(self) -> set[str]:
        """The regions with a live node that takes placements."""
        return {m.info.region for m in self.fleet.members.values() if m.node_id not in self.fleet.draining}

    def nearest(self, region: str | None, candidates: Collection[str]) -> str:
        """The candidate region closest to `region` (by the latency matrix; then by name)."""
        return min(candidates, key=lambda r: (self.matrix.rtt(region, r), r))

    def region_of(self, sandbox_id: str) -> str | None:
        """The region the sandbox runs in, or whose store holds its files while on no node."""
        node = self.fleet.node_of(sandbox_id)
        if node is not None:
            return self.fleet.members[node].info.region
        return self.regions.get(sandbox_id).region

    def _outside(self, region: str) -> set[str]:
        return {m.node_id for m in self.fleet.members.values() if m.info.region != region}

    # ---- an explicit or follow-the-user move ------------------------------------------

    async def move(self, sandbox_id: str, target: str) -> MoveReport:
        """Hibernate the sandbox, copy its files to `target`'s store and resume it there."""
        if target not in self.live_regions():
            raise NoCapacity(f"no live node is in region {target!r}", retry_after_s=1)
        started = time.monotonic()
        phases: dict[str, float] = {}

        def lap(name: str) -> None:
            phases[name] = round(time.monotonic() - started - sum(phases.values()), 3)

        async with self.fleet.recovering(sandbox_id), self.fleet.moving.hold(sandbox_id):
            if self.region_of(sandbox_id) == target:  # there already (another move took it there meanwhile)
                return MoveReport(sandbox_id, target, target, self.fleet.node_of(sandbox_id) or "", 0, 0, 0.0, {})
            source, manifest = await self._off_node(sandbox_id)
            lap("hibernate")
            copied = CopyReport()
            if manifest is not None and source is not None:
                copied = await asyncio.to_thread(self.stores.copy, manifest, source, target)
            lap("copy")
            placement = self.fleet.placements.get(sandbox_id)
            if placement is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            rec = await self._adopt_in(placement.record, manifest, target)
            self.regions.moved(sandbox_id, target, time.time())
            lap("resume")
        self.moves += 1
        self.bytes_copied += copied.bytes_copied
        report = MoveReport(sandbox_id, source, target, self.fleet.node_of(rec.id) or "", copied.bytes_copied,
                            copied.chunks_copied, round(time.monotonic() - started, 3), phases)  # fmt: skip
        log.info("sandbox %s moved from %s to %s (%s) in %.2f s %s, %d bytes copied", sandbox_id, source, target,
                 report.node, report.seconds, phases, report.bytes_copied)  # fmt: skip
        return report

    async def _off_node(self, sandbox_id: str) -> tuple[str | None, str | None]:
        """Take the sandbox off its node with its files in its region's store (parked);
        its region and its snapshot. One on no node already: its region and checkpoint."""
        node = self.fleet.node_of(sandbox_id)
        if node is None:
            placement = self.fleet.placements.get(sandbox_id)
            if placement is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            return self.regions.get(sandbox_id).region, placement.checkpoint
        member = self.fleet.members[node]
        manifest = await self._hibernated(member, sandbox_id)
        self.fleet.placements.park(sandbox_id, manifest)
        await member.remote.kill(sandbox_id)
        self.regions.record(sandbox_id, member.info.region)
        return member.info.region, manifest

    async def _hibernated(self, member: Member, sandbox_id: str) -> str:
        rec = await member.remote.current(sandbox_id)
        if rec.state == "hibernated" and rec.snapshot:
            return rec.snapshot
        if rec.state == "paused":
            await member.remote.resume(sandbox_id)
        if rec.state == "stopped":  # no processes to stop: its files are all there is
            return await member.remote.snapshot(sandbox_id)
        hibernated = await member.remote.hibernate(sandbox_id, keep_local=False)
        assert hibernated.snapshot is not None, "a hibernated sandbox names its snapshot"
        return hibernated.snapshot

    async def _adopt_in(self, rec: SandboxRecord, manifest: str | None, region: str) -> SandboxRecord:
        return await self.fleet.adopt(rec, manifest, avoid=self._outside(region))

    # ---- a snapshot for a new sandbox (Fleet.carry) -----------------------------------

    async def carry(self, manifest: str, region: str) -> None:
        """Make snapshot `manifest` (a fork's, a named snapshot's) readable in `region`:
        copied from a region whose store has it, if its own lacks it."""
        if self.stores.urls:  # else one store for every region
            regions = sorted(set(self.stores.urls) | self.live_regions())
            self.bytes_copied += await asyncio.to_thread(self._carry, manifest, region, regions)

    def _carry(self, manifest: str, region: str, regions: list[str]) -> int:
        key = f"manifests/{manifest}"
        if self.stores.store(region).blobs.has(key):
            return 0
        for source in regions:
            if not self.stores.shared(source, region) and self.stores.store(source).blobs.has(key):
                return self.stores.copy(manifest, source, region).bytes_copied
        return 0  # in no store: the node says so

    # ---- resuming a lost or parked sandbox (Fleet.adopt_lost) ------------------------

    async def adopt_lost(self, placement: Placement) -> SandboxRecord:
        """Resume a sandbox that is on no node in the region whose store holds its last
        checkpoint; if no node of that region is live, from its replica in another."""
        sandbox_id, home = placement.sandbox_id, self.regions.get(placement.sandbox_id)
        live = self.live_regions()
        if not live:
            raise NoCapacity("no live node can take the sandbox", retry_after_s=1)
        if home.region is None or home.region in live:
            target = home.region or self.nearest(None, live)
            rec = await self._adopt_in(placement.record, placement.checkpoint, target)
        elif home.replica_manifest is not None and home.replica_region in live:
            log.warning("sandbox %s: no node of region %s is live; resuming it in %s from its replica of %.0f",
                        sandbox_id, home.region, home.replica_region, home.replica_at or 0)  # fmt: skip
            target = home.replica_region
            rec = await self._adopt_in(placement.record, home.replica_manifest, target)
        else:  # no replica to resume from: copy its checkpoint over, if its region's store still answers
            target = self.nearest(home.region, live)
            if placement.checkpoint is not None:
                await asyncio.to_thread(self.stores.copy, placement.checkpoint, home.region, target)
            rec = await self._adopt_in(placement.record, placement.checkpoint, target)
        self.regions.record(sandbox_id, target)
        return rec
