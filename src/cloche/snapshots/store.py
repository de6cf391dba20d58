"""Chunks and manifests on a blob store: content-addressed by SHA-256 of the plain
bytes, zstd-compressed, verified on every read. A chunk is written once per hash."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import zstandard

from cloche.snapshots.blobstore import BlobNotFound, BlobStore

ZSTD_LEVEL = 3


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

    def put_chunk(self, data: bytes, stats: WriteStats) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._known or self.blobs.has(f"chunks/{digest}"):
            stats.chunks_reused += 1
        else:
            blob = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
            self.blobs.put(f"chunks/{digest}", blob)
            stats.chunks_written += 1
            stats.bytes_written += len(blob)
        with self._lock:
            self._known.add(digest)
        return digest

    def get_chunk(self, digest: str) -> bytes:
        try:
            blob = self.blobs.get(f"chunks/{digest}")
        except BlobNotFound:
            raise SnapshotCorrupt(f"chunk {digest} is missing from the blob store") from None
        try:
            data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 26)
        except zstandard.ZstdError as exc:
            raise SnapshotCorrupt(f"chunk {digest} does not decompress: {exc}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise SnapshotCorrupt(f"chunk {digest} failed its hash check")
        return data

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
