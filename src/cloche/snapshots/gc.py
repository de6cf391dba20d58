"""Garbage collection of chunks and manifests no snapshot references any more.

Safe against a concurrent hibernate: the sweep holds the store's GC lock, which waits
for writers in flight to finish and keeps new ones out until it is done, and it never
deletes a blob younger than the grace period (for writers in other processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cloche.snapshots.store import SnapshotCorrupt, SnapshotStore
from cloche.snapshots.tree import chunk_digests


@dataclass
class GcReport:
    chunks_deleted: int = 0
    manifests_deleted: int = 0
    chunks_kept: int = 0


def collect(store: SnapshotStore, live: Callable[[], set[str]], grace_s: float = 300.0) -> GcReport:
    """`live()` is asked for the referenced manifests only once writers are drained,
    so a manifest recorded by a hibernate that just finished is always counted."""
    report = GcReport()
    with store.gc_lock:
        store.wait_for_writers()
        live_manifests = live()
        cutoff = time.time() - grace_s
        live_chunks: set[str] = set()
        for digest in live_manifests:
            try:
                live_chunks |= chunk_digests(store.get_manifest(digest))
            except SnapshotCorrupt:
                continue
        dead: set[str] = set()
        for key, modified in list(store.blobs.list("chunks/")):
            digest = key.rpartition("/")[2]
            if digest in live_chunks or modified > cutoff:
                report.chunks_kept += 1
                continue
            store.blobs.delete(key)
            dead.add(digest)
            report.chunks_deleted += 1
        store.forget(dead)
        for key, modified in list(store.blobs.list("manifests/")):
            if key.rpartition("/")[2] not in live_manifests and modified <= cutoff:
                store.blobs.delete(key)
                report.manifests_deleted += 1
    return report
