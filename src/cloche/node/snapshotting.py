"""Turning a sandbox's writable layer into a snapshot: hibernate and snapshot.

Why it exists: both read the sandbox's overlay upper layer into the content-addressed
snapshot store while nothing writes to it (the container deleted, or frozen), mounting
a stopped sandbox's disk for the time of the read. Hibernating then releases CPU,
memory and cgroup and keeps only the record, the snapshot and (optionally) the disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from cloche.node import disk
from cloche.node.errors import InvalidState
from cloche.node.provision import SandboxBuilder
from cloche.node.records import SandboxRecord
from cloche.node.uids import UidAllocator
from cloche.snapshots import tree
from cloche.snapshots.store import SnapshotCorrupt, SnapshotStore, WriteStats


class Snapshotter:
    def __init__(self, builder: SandboxBuilder, snapshots: SnapshotStore,
                 announce_stopped: Callable[[str], Awaitable[None]]) -> None:  # fmt: skip
        self.builder = builder
        self.table = builder.table
        self.snapshots = snapshots
        self._announce_stopped = announce_stopped

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord:
        """Stop the processes, capture the writable layer as a snapshot and release CPU,
        memory and cgroup. With keep_local the disk stays on this node for a fast resume."""
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state == "creating":
                raise InvalidState(f"sandbox {sandbox_id} is still being created")
            if rec.state != "hibernated":
                await self._announce_stopped(sandbox_id)
                await asyncio.to_thread(self._hibernate, rec)
            if not keep_local:
                (self.builder.records.dir(sandbox_id) / "disk.img").unlink(missing_ok=True)
            return rec

    async def snapshot(self, sandbox_id: str) -> str:
        """A consistent snapshot of the sandbox's current files, leaving it as it was
        (a running sandbox is frozen while its layer is read)."""
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if rec.state == "hibernated" and rec.snapshot:
                return rec.snapshot
            return await asyncio.to_thread(self._snapshot_live, rec)

    def _capture(self, rec: SandboxRecord) -> tuple[str, WriteStats]:
        """Snapshot the sandbox's upper layer (its disk must be mounted and quiet)."""
        parent = None
        if rec.snapshot:
            try:
                parent = self.snapshots.get_manifest(rec.snapshot)
            except SnapshotCorrupt:
                parent = None
        stats = WriteStats()
        upper = self.builder.run / rec.id / "disk" / "upper"
        manifest = tree.capture(upper, UidAllocator.base(rec.uid_index), self.snapshots, parent, stats)
        manifest["template"] = rec.spec.template
        return self.snapshots.put_manifest(manifest, stats), stats

    def _mount_for_capture(self, rec: SandboxRecord) -> bool:
        """Mount a stopped sandbox's disk; returns whether we mounted it."""
        target = self.builder.run / rec.id / "disk"
        if os.path.ismount(target):
            return False
        target.mkdir(parents=True, exist_ok=True)
        disk.mount_image(str(self.builder.records.dir(rec.id) / "disk.img"), str(target))
        return True

    def _hibernate(self, rec: SandboxRecord) -> None:
        self.builder.driver(rec).delete(rec.id)
        self._mount_for_capture(rec)
        self.snapshots.begin_write()
        try:
            digest, stats = self._capture(rec)
            rec.snapshot = digest
            rec.last_hibernate = {"chunks_written": stats.chunks_written, "bytes_written": stats.bytes_written,
                                  "chunks_reused": stats.chunks_reused}  # fmt: skip
            rec.state = "hibernated"
            self.builder.records.save(rec)
        finally:
            self.snapshots.end_write()
        self.builder.teardown(rec.id)

    def _snapshot_live(self, rec: SandboxRecord) -> str:
        frozen = rec.state == "running"
        if frozen:
            self.builder.driver(rec).pause(rec.id)
        mounted = self._mount_for_capture(rec) if rec.state in ("stopped", "hibernated") else False
        self.snapshots.begin_write()
        try:
            digest, _ = self._capture(rec)
            return digest
        finally:
            self.snapshots.end_write()
            if mounted:
                disk.unmount(str(self.builder.run / rec.id / "disk"))
            if frozen:
                self.builder.driver(rec).resume(rec.id)
