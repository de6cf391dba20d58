"""Each region's snapshot store, and copying a snapshot from one region's store to another's.

Why it exists: a region may keep its snapshots in a store of its own (an S3 bucket near
its nodes, CLOCHE_REGION_BLOB_URLS), and a node reads only its region's. A sandbox that
changes region (moved, following its user, or resumed after its region was lost) needs
its snapshot in the new region's store first. Chunks are content-addressed, so only the
chunks the target lacks are copied, as stored (compressed, not encoded again); the
manifest goes last, so a store never holds a manifest naming a chunk it lacks.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cloche.snapshots.blobstore import BlobStore, LocalBlobStore, s3_store
from cloche.snapshots.store import SnapshotStore
from cloche.snapshots.tree import chunk_digests

# Chunks copied at once: each is up to three round trips (is it there, get, put) of a
# few ms, so many overlap; S3BlobStore's connection pool holds two such copies.
COPY_PARALLEL = 32


@dataclass
class CopyReport:
    chunks_copied: int = 0
    chunks_present: int = 0
    bytes_copied: int = 0  # as stored: compressed chunks and the manifest


def copy_snapshot(source: SnapshotStore, target: BlobStore, manifest: str) -> CopyReport:
    """Copy snapshot `manifest` (checked against its digest) and the chunks of it that
    `target` lacks from `source` to `target`."""
    report, lock = CopyReport(), threading.Lock()
    key = f"manifests/{manifest}"
    if target.has(key):  # a manifest is written after its chunks: they are all there
        return report

    def copy(digest: str) -> None:
        chunk = f"chunks/{digest}"
        if target.has(chunk):
            with lock:
                report.chunks_present += 1
            return
        blob = source.blobs.get(chunk)
        target.put(chunk, blob)
        with lock:
            report.chunks_copied += 1
            report.bytes_copied += len(blob)

    digests = sorted(chunk_digests(source.get_manifest(manifest)))
    with ThreadPoolExecutor(COPY_PARALLEL, thread_name_prefix="snapshot-copy") as pool:
        list(pool.map(copy, digests))
    raw = source.blobs.get(key)
    target.put(key, raw)
    report.bytes_copied += len(raw)
    return report


def open_remote(url: str) -> BlobStore:
    """The store at `url` as every node of its region sees it, with no local cache."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return s3_store(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    raise ValueError(f"a region's snapshot store must be s3:// or file:///, got {url!r}")


class RegionStores:
    """The regions' stores by name (`urls`; a region not named uses `default_url`),
    opened on first use."""

    def __init__(self, urls: dict[str, str], default_url: str) -> None:
        self.urls = urls
        self.default_url = default_url
        self._open: dict[str, SnapshotStore] = {}
        self._lock = threading.Lock()

    def url(self, region: str) -> str:
        return self.urls.get(region, self.default_url)

    def shared(self, a: str, b: str) -> bool:
        """Whether regions `a` and `b` keep their snapshots in the same store."""
        return self.url(a) == self.url(b)

    def store(self, region: str) -> SnapshotStore:
        url = self.url(region)
        with self._lock:
            if url not in self._open:
                self._open[url] = SnapshotStore(open_remote(url))
            return self._open[url]

    def copy(self, manifest: str, source: str, target: str) -> CopyReport:
        """Make snapshot `manifest` of region `source`'s store readable in region `target`."""
        if self.shared(source, target):
            return CopyReport()
        return copy_snapshot(self.store(source), self.store(target).blobs, manifest)
