"""The work one server replica does for the whole cluster, while it leads.

Why it exists: some duties must run once, not once per replica. The replicas elect a
leader in etcd (`cloche.cluster.election`); while its term lasts the leader

- **checkpoints** every running sandbox to the snapshot store on an interval (the
  snapshot is incremental: only chunks the store lacks are uploaded), so a sandbox whose
  node dies resumes elsewhere having lost at most one interval of work, and copies
  each new checkpoint to a second region's store (fleet/replicate.py);
- records a hibernated sandbox's snapshot as its checkpoint (nothing to upload);
- brings back at once the lost instances of apps deployed with `restart: always`;
- **drains** the nodes asked to (`cloche node drain`): each sandbox is hibernated with
  its files uploaded, removed from the node, and resumed on another node if it was
  running (else it resumes on its next wake); then the drain is marked done.

Both place sandboxes as any wake does (`Fleet.choose`): a sandbox pinned to regions is
resumed only there, and when they have no room it stays in the store until they do.

A term ends when the leader's session fences, and `Election.run` cancels this work then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from cloche.cluster.election import Term
from cloche.cluster.etcd import EtcdUnavailable
from cloche.fleet.fleet import Fleet
from cloche.fleet.members import DRAINING, Member
from cloche.node.errors import RuntimeFailure
from cloche.node.records import SandboxRecord
from cloche.scheduler.errors import SchedulerError

log = logging.getLogger("cloche.leader")
TICK_S = 0.5
PARALLEL = 4  # checkpoints (and drain moves) in flight at once


class Leader:
    def __init__(self, fleet: Fleet, checkpoint_interval_s: float,
                 replicate: Callable[[], Awaitable[int]] | None = None) -> None:  # fmt: skip
        self.fleet = fleet
        self.interval = checkpoint_interval_s
        self.replicate = replicate  # copies new checkpoints to a second region (fleet/replicate.py)
        self._replicating: asyncio.Task[None] | None = None  # in the background: drains do not wait on copies
        self._slots = asyncio.Semaphore(PARALLEL)

    async def __call__(self, term: Term) -> None:
        log.info("leading the cluster (term %d)", term.token)
        next_checkpoint = time.monotonic() + self.interval
        try:
            while True:
                try:
                    if time.monotonic() >= next_checkpoint:
                        next_checkpoint = time.monotonic() + self.interval
                        await self.checkpoint_all()
                        self._replicate()
                    elif await self.checkpoint_all(only_new=True):
                        self._replicate()
                    await self.drain_requested()
                    await self.restart_lost()
                except (EtcdUnavailable, TimeoutError) as e:
                    log.warning("leader: etcd unavailable (%s)", e)
                except Exception:
                    log.exception("leader duties")
                await asyncio.sleep(TICK_S)
        finally:
            if self._replicating is not None:
                self._replicating.cancel()

    def _replicate(self) -> None:
        """Copy the new checkpoints to a second region, unless a copy is still under way."""
        if self.replicate is None or (self._replicating is not None and not self._replicating.done()):
            return
        self._replicating = asyncio.create_task(self._replicate_once(self.replicate), name="leader-replicate")

    @staticmethod
    async def _replicate_once(replicate: Callable[[], Awaitable[int]]) -> None:
        try:
            await replicate()
        except Exception:
            log.exception("checkpoint replicas")

    # ---- checkpoints ---------------------------------------------------------------------

    async def checkpoint_all(self, only_new: bool = False) -> int:
        """Checkpoint every running sandbox on every live node (`only_new`: those that have
        none yet, so a sandbox lost in its first interval does not lose its setup); how
        many were taken."""
        new = await asyncio.to_thread(self.fleet.placements.unchecked) if only_new else None
        jobs = [(m, r) for m in list(self.fleet.members.values()) for r in m.remote.list()
                if new is None or r.id in new]  # fmt: skip
        done = await asyncio.gather(*(self._checkpoint(m, r) for m, r in jobs))
        return sum(done)

    async def _checkpoint(self, member: Member, rec: SandboxRecord) -> bool:
        if rec.state == "hibernated" and rec.snapshot:
            placement = await asyncio.to_thread(self.fleet.placements.get, rec.id)
            if placement is not None and placement.checkpoint != rec.snapshot:
                await asyncio.to_thread(self.fleet.placements.checkpointed, rec.id, member.node_id, rec.snapshot,
                                        rec.updated_at)  # fmt: skip
            return False
        if rec.state != "running":
            return False
        async with self._slots:
            taken_at = time.time()
            try:
                manifest = await member.remote.snapshot(rec.id)
            except RuntimeFailure as e:  # it stopped or went meanwhile
                log.info("checkpoint of %s skipped: %s", rec.id, e)
                return False
            await asyncio.to_thread(self.fleet.placements.checkpointed, rec.id, member.node_id, manifest, taken_at)
            return True

    # ---- restart: always --------------------------------------------------------------------

    async def restart_lost(self) -> int:
        """Bring back at once the lost instances of apps deployed with `restart: always`
        (the others come back on their next request); how many were started."""
        started = 0
        for sandbox_id in self.fleet.lost_ids():
            if self.fleet.node_of(sandbox_id) is None and await asyncio.to_thread(self._always, sandbox_id):
                try:
                    await self.fleet.wake(sandbox_id)
                    started += 1
                except (RuntimeFailure, SchedulerError) as e:  # SchedulerError: its pinned regions are full
                    log.warning("restart of %s failed (%s); trying again", sandbox_id, e)
        return started

    def _always(self, sandbox_id: str) -> bool:
        rows = self.fleet.placements.store.query(
            "SELECT a.spec FROM agents g JOIN apps a ON a.tenant_id = g.tenant_id AND a.name = g.app "
            "WHERE g.sandbox_id = ?", (sandbox_id,))  # fmt: skip
        return bool(rows) and json.loads(rows[0][0]).get("restart") == "always"

    # ---- drains --------------------------------------------------------------------------

    async def drain_requested(self) -> None:
        entries, _ = await self.fleet.etcd.list(DRAINING)
        for entry in entries:
            node_id = entry.key[len(DRAINING) :]
            if json.loads(entry.value).get("state") != "requested":
                continue
            member = self.fleet.members.get(node_id)
            moved = 0 if member is None else await self.drain(member)
            doc = {"state": "done", "moved": moved, "at": time.time()}
            await self.fleet.etcd.put(entry.key, json.dumps(doc).encode())
            log.info("node %s drained: %d sandboxes moved", node_id, moved)

    async def drain(self, member: Member) -> int:
        """Move every sandbox off `member` (placements already avoid it: it is draining)."""
        self.fleet.draining.add(member.node_id)
        records = member.remote.list()
        moved = await asyncio.gather(*(self._move(member, r) for r in records))
        return sum(moved)

    async def _move(self, member: Member, rec: SandboxRecord) -> bool:
        async with self._slots, self.fleet.recovering(rec.id):
            was_running = rec.state in ("running", "paused")
            try:
                if rec.state == "paused":
                    await member.remote.resume(rec.id)
                hibernated = await member.remote.hibernate(rec.id, keep_local=False)
                if hibernated.snapshot is None:
                    return False
                await asyncio.to_thread(self.fleet.placements.park, rec.id, hibernated.snapshot)
                await member.remote.kill(rec.id)
            except RuntimeFailure as e:
                log.error("drain of %s: could not move %s (%s)", member.node_id, rec.id, e)
                return False
        await self.fleet.refresh()
        if was_running:
            with contextlib.suppress(RuntimeFailure, SchedulerError):  # then it resumes on its next wake
                await self.fleet.wake(rec.id)
        return True
