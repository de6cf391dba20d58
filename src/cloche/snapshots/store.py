"""Chunks and manifests on a blob store: content-addressed by SHA-256 of the plain
bytes, zstd-compressed, verified on every read. A chunk is written once per hash."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import zstandard

from cloche.snapshots.blobstore import BlobNotFound, BlobStore

ZSTD_LEVEL = 3
# Blob store requests in flight per store: on S3 each is a round trip, so they overlap.
PARALLEL = 8


class SnapshotCorrupt(Exception):
    """A chunk or manifest failed its hash check, or is missing."""


@dataclass
class WriteStats:
    chunks_written: int = 0
    bytes_written: int = 0  # compressed bytes sent to the blob store
    chunks_reused: int = 0


class SnapshotStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._known: set[str] = set()
        self._lock = threading.Lock()
        # Held shared by writers and exclusively by garbage collection's sweep, so a
        # chunk found present by a writer is not deleted before its manifest lands.
        self.gc_lock = threading.Lock()
        self._writers = 0
        self._writers_done = threading.Condition(self._lock)
        self._io = ThreadPoolExecutor(PARALLEL, thread_name_prefix="snapshot-io")

    # ---- writer registration (a simple readers-writer lock around GC) ----------------

    def begin_write(self) -> None:
        with self.gc_lock, self._lock:
            self._writers += 1

    def end_write(self) -> None:
        with self._lock:
            self._writers -= 1
            self._writers_done.notify_all()

    def wait_for_writers(self) -> None:
        with self._lock:
            while self._writers:
                self._writers_done.wait()

    # ---- chunks -----------------------------------------------------------------------

    def writer(self, stats: WriteStats) -> ChunkWriter:
        return ChunkWriter(self, stats)

    def _put_chunk(self, digest: str, data: bytes, stats: WriteStats) -> None:
        if digest in self._known or self.blobs.has(f"chunks/{digest}"):
            with self._lock:
                stats.chunks_reused += 1
        else:
            blob = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
            self.blobs.put(f"chunks/{digest}", blob)
            with self._lock:
                stats.chunks_written += 1
                stats.bytes_written += len(blob)
        with self._lock:
            self._known.add(digest)

    def get_chunks(self, digests: Iterable[str]) -> Iterator[bytes]:
        """get_chunk of each digest, in order, fetching up to 2 * PARALLEL ahead."""
        ahead: deque[Future[bytes]] = deque()
        for digest in digests:
            ahead.append(self._io.submit(self.get_chunk, digest))
            if len(ahead) >= 2 * PARALLEL:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def get_chunk(self, digest: str) -> bytes:
        """The chunk's bytes, checked against its digest; a copy that fails the check is
        fetched once more from where it is kept for good (a node's cache may hold a torn one)."""
        key, missing = f"chunks/{digest}", f"chunk {digest} is missing from the blob store"
        try:
            return _checked(digest, self.blobs.get(key))
        except BlobNotFound:
            raise SnapshotCorrupt(missing) from None
        except SnapshotCorrupt:
            pass
        try:
            return _checked(digest, self.blobs.refetch(key))
        except BlobNotFound:
            raise SnapshotCorrupt(missing) from None

    def forget(self, digests: set[str]) -> None:
        with self._lock:
            self._known -= digests

    # ---- manifests --------------------------------------------------------------------

    def put_manifest(self, manifest: dict[str, Any], stats: WriteStats) -> str:
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = hashlib.sha256(raw).hexdigest()
        blob = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
        self.blobs.put(f"manifests/{digest}", blob)
        stats.bytes_written += len(blob)
        return digest

    def get_manifest(self, digest: str) -> dict[str, Any]:
        try:
            blob = self.blobs.get(f"manifests/{digest}")
            raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 30)
        except (BlobNotFound, zstandard.ZstdError) as exc:
            raise SnapshotCorrupt(f"manifest {digest} is missing or unreadable: {exc}") from None
        if hashlib.sha256(raw).hexdigest() != digest:
            raise SnapshotCorrupt(f"manifest {digest} failed its hash check")
        return json.loads(raw)


class ChunkWriter:
    """The chunks of one capture on their way to the blob store, PARALLEL at a time.
    Leaving the `with` block waits until every one is stored, and raises the first
    failure: a manifest is written only once all the chunks it names are."""

    def __init__(self, store: SnapshotStore, stats: WriteStats) -> None:
        self.store = store
        self.stats = stats
        self._slots = threading.BoundedSemaphore(2 * PARALLEL)  # bounds the bytes held in memory
        self._pending: list[Future[None]] = []
        self._failed: BaseException | None = None

    def put(self, data: bytes) -> str:
        """Start storing `data`; returns its digest at once. Once a chunk has failed to
        store, raises that failure instead of queueing more behind a broken store."""
        if self._failed is not None:
            raise self._failed
        digest = hashlib.sha256(data).hexdigest()
        self._slots.acquire()
        future = self.store._io.submit(self.store._put_chunk, digest, data, self.stats)
        future.add_done_callback(self._done)
        self._pending.append(future)
        return digest

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        if self._failed is None:
            self._failed = future.exception()

    def reused(self, count: int) -> None:
        """Count chunks a file keeps from the parent manifest, unread."""
        with self.store._lock:
            self.stats.chunks_reused += count

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        for future in self._pending:
            error = future.exception()
            if error is not None and exc is None:
                raise error


def _checked(digest: str, blob: bytes) -> bytes:
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 26)
    except zstandard.ZstdError as exc:
        raise SnapshotCorrupt(f"chunk {digest} does not decompress: {exc}") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise SnapshotCorrupt(f"chunk {digest} failed its hash check")
    return data
