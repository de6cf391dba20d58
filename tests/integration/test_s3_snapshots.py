"""Snapshots on a real S3 server (SeaweedFS): killing the server in the middle of an
upload never leaves a manifest that names a missing chunk, and the upload, retried,
completes; big blobs go up in parts; the server checks each upload's CRC32 and returns
it with every read."""

from __future__ import annotations

import base64
import itertools
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from cloche.cluster.local.weed import WeedS3
from cloche.snapshots import tree
from cloche.snapshots.blobstore import BlobStoreUnavailable, CachedBlobStore, S3BlobStore, open_store
from cloche.snapshots.store import SnapshotCorrupt, SnapshotStore, WriteStats

pytestmark = pytest.mark.offline  # a weed server on loopback; no node, no sandbox


@pytest.fixture
def weed(monkeypatch) -> Iterator[WeedS3]:
    """A server of the test's own, since the test kills it."""
    server = WeedS3(Path(tempfile.mkdtemp(prefix="cloche-weed-")))
    for name, value in server.credentials().items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


def _remote(store: SnapshotStore) -> S3BlobStore:
    blobs = store.blobs
    assert isinstance(blobs, CachedBlobStore) and isinstance(blobs.remote, S3BlobStore)
    return blobs.remote


def _workspace(root: Path) -> Path:
    """A tree of about 40 chunks: enough that a kill lands between the first and the last."""
    ws = root / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "big").write_bytes(os.urandom(2_000_000))
    (ws / "sub" / "other").write_bytes(os.urandom(600_000))
    (ws / "small").write_text("hello")
    return ws


def _manifests_name_only_present_chunks(remote: S3BlobStore, store: SnapshotStore) -> int:
    chunks = {key.rpartition("/")[2] for key, _ in remote.list("chunks/")}
    manifests = [key.rpartition("/")[2] for key, _ in remote.list("manifests/")]
    for digest in manifests:
        missing = tree.chunk_digests(store.get_manifest(digest)) - chunks
        assert not missing, f"manifest {digest} names {len(missing)} chunks the server does not have"
    return len(manifests)


def test_kill_during_upload_leaves_no_manifest_pointing_at_a_missing_chunk(weed, tmp_path):
    store = SnapshotStore(open_store(weed.bucket("killed"), tmp_path / "blobs"))
    remote = _remote(store)
    ws = _workspace(tmp_path)
    puts = itertools.count(1)  # chunks go up from several threads at once

    def kill_after_ten(**_: object) -> None:
        if next(puts) == 10:
            weed.kill()

    remote.s3.meta.events.register("after-call.s3.PutObject", kill_after_ten)
    with pytest.raises(BlobStoreUnavailable):  # the server is gone, retries and all
        store.put_manifest(tree.capture(ws, 0, store, None, WriteStats()), WriteStats())
    acknowledged = next(puts) - 1
    assert acknowledged >= 10

    weed.start()  # on the same directory: what was acknowledged is still there
    assert _manifests_name_only_present_chunks(remote, store) == 0
    digest = store.put_manifest(tree.capture(ws, 0, store, None, WriteStats()), WriteStats())
    assert _manifests_name_only_present_chunks(remote, store) == 1
    assert len(list(remote.list("chunks/"))) > acknowledged  # the kill came before the last chunk

    # a node with an empty cache restores it from S3 alone, byte for byte
    elsewhere = SnapshotStore(open_store(weed.blob_url("killed"), tmp_path / "other-node"))
    (tmp_path / "restored").mkdir()
    tree.restore(elsewhere.get_manifest(digest), tmp_path / "restored", 0, elsewhere)
    for rel in ("big", "sub/other", "small"):
        assert (tmp_path / "restored" / rel).read_bytes() == (ws / rel).read_bytes()


def test_big_blobs_go_up_in_parts_and_come_back_whole(s3_server, tmp_path):
    store = open_store(s3_server.bucket("multipart"), tmp_path / "blobs")
    assert isinstance(store, CachedBlobStore) and isinstance(store.remote, S3BlobStore)
    data = os.urandom(S3BlobStore.MULTIPART_BYTES * 2 + 1000)
    store.put("manifests/big", data)
    head = store.remote.s3.head_object(Bucket="multipart", Key="cloche/manifests/big", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ChecksumCRC32"]  # the server kept the checksum it verified
    assert store.remote.get("manifests/big") == data


def test_the_server_checks_each_upload_and_hands_its_checksum_to_every_reader(s3_server, tmp_path):
    """SeaweedFS's side of the flexible checksums: a body that does not match the CRC32
    it came with is refused, and every GET carries the stored CRC32, which botocore
    checks the body against (the store asks for it: ChecksumMode=ENABLED)."""
    store = open_store(s3_server.bucket("checksums"), tmp_path / "blobs")
    assert isinstance(store, CachedBlobStore) and isinstance(store.remote, S3BlobStore)
    payload = os.urandom(100_000)
    store.put("chunks/good", payload)
    crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    got = store.remote.s3.get_object(Bucket="checksums", Key="cloche/chunks/good", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc and got["Body"].read() == payload
    with pytest.raises(ClientError, match="BadDigest"):
        store.remote.s3.put_object(Bucket="checksums", Key="cloche/chunks/bad", Body=payload[1:], ChecksumCRC32=crc)
    assert not store.has("chunks/bad")


def test_a_torn_cached_chunk_is_fetched_again_from_s3(s3_server, tmp_path):
    """The node's chunk cache is not fsynced (a wake would wait on a flush per chunk): a
    copy torn by a crash fails its hash check and is replaced from S3, never restored."""
    store = SnapshotStore(open_store(s3_server.bucket("torn"), tmp_path / "blobs"))
    cache = store.blobs.cache  # type: ignore[attr-defined]
    assert not cache.durable
    data = os.urandom(300_000)
    with store.writer(WriteStats()) as writer:
        digest = writer.put(data)
    torn = cache._path(f"chunks/{digest}")
    torn.write_bytes(torn.read_bytes()[:1000])  # what a crash before the flush can leave
    assert store.get_chunk(digest) == data
    assert store.blobs.get(f"chunks/{digest}") == torn.read_bytes() != b""  # the cache holds the whole copy again
    _remote(store).delete(f"chunks/{digest}")
    torn.write_bytes(b"garbage")
    with pytest.raises(SnapshotCorrupt, match="missing"):  # torn here and gone there: refused, not restored
        store.get_chunk(digest)
