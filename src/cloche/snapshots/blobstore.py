"""Blob stores behind one interface: a local directory (embedded default) and
S3-compatible object storage, the latter behind a node-local cache. Keys are
slash-separated names such as chunks/<sha256>: content-addressed, so a blob under a key
never changes and a cached copy never goes stale."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse


class BlobNotFound(KeyError):
    pass


class BlobStoreUnavailable(OSError):
    """The blob store did not answer, after its client's retries (S3 down or unreachable)."""


class BlobStore(Protocol):
    def has(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes) -> None:
        """Store atomically: a reader sees the whole blob or none of it."""

    def get(self, key: str) -> bytes: ...

    def refetch(self, key: str) -> bytes:
        """The blob again from where it is kept for good, for a copy that failed its check
        (a cached copy is replaced; a store without a cache can only read it again)."""

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, last-modified unix time) of every blob under prefix."""


class LocalBlobStore:
    """`durable`: each blob is fsynced before it is renamed into place. A cache is not:
    its copies can be fetched again, and a torn one fails its chunk's hash check and is
    (`CachedBlobStore.refetch`), so a wake does not wait on a disk flush per chunk."""

    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"bad blob key {key!r}")
        kind, _, name = key.partition("/")
        return self.root / kind / name[:2] / name if name else self.root / kind

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def refetch(self, key: str) -> bytes:
        return self.get(key)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        kind = prefix.rstrip("/")
        base = self.root / kind
        if not base.is_dir():
            return
        for fanout in base.iterdir():
            if not fanout.is_dir():
                continue
            for blob in fanout.iterdir():
                if not blob.name.startswith("."):
                    yield f"{kind}/{blob.name}", blob.stat().st_mtime


class S3BlobStore:
    """Any S3-compatible server. Writes go through boto3: transient failures are retried
    with backoff (botocore's standard mode), every PUT carries a CRC32 the server checks,
    and blobs over MULTIPART_BYTES go up as a multipart upload. A PUT, single or
    multipart, is atomic: an interrupted one leaves no object behind.

    Reads (GET and HEAD) go through obstore (Rust, no GIL held while it waits or parses),
    with the credentials boto3 resolved: a resume reads one GET per 64 KiB chunk, and
    boto3's Python per request, under the GIL, was most of a resume from S3
    (bench/cluster_bench.py: 100 MB from S3 took 9.0x the time from file:// with boto3
    reads, 3.04x with obstore; BENCHMARKS.md "Cluster mode"). Every
    blob read is a chunk or a manifest, each checked against its SHA-256 by the snapshot
    store, so a GET needs no checksum of its own."""

    MULTIPART_BYTES = 8 << 20

    def __init__(self, bucket: str, endpoint: str | None = None, prefix: str = "", region: str = "us-east-1") -> None:
        import boto3.session
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60,
                        max_pool_connections=64,  # a move and a replica may each copy 32 chunks at once
                        request_checksum_calculation="when_supported",
                        response_checksum_validation="when_supported")  # fmt: skip
        # A session of its own: boto3's default one is not thread-safe and keeps the
        # credentials it first resolved for every later client.
        session = boto3.session.Session()
        self.s3 = session.client("s3", endpoint_url=endpoint, region_name=region, config=config)
        self.reads = _read_store(session, bucket, self.prefix, endpoint, region)
        part = self.MULTIPART_BYTES
        self.transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def has(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self.reads, key)
            return True
        except FileNotFoundError:  # obstore's "not found"
            return False
        except obstore.exceptions.BaseError as exc:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket}: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError

        try:
            self._put(key, data)
        except BotoCoreError as exc:  # unreachable, after botocore's retries (an S3 error answer stays a ClientError)
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket}: {exc}") from exc

    def _put(self, key: str, data: bytes) -> None:
        if len(data) < self.MULTIPART_BYTES:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="CRC32")
        else:
            self.s3.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=self.transfer,
                                   ExtraArgs={"ChecksumAlgorithm": "CRC32"})  # fmt: skip

    def get(self, key: str) -> bytes:
        import obstore

        try:
            return obstore.get(self.reads, key).bytes().to_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except obstore.exceptions.BaseError as exc:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket}: {exc}") from exc

    def refetch(self, key: str) -> bytes:
        return self.get(key)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix) :], obj["LastModified"].timestamp()


def _read_store(session: Any, bucket: str, prefix: str, endpoint: str | None, region: str) -> Any:
    """An obstore S3Store on the same bucket, endpoint and credentials as `session`'s client."""
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store

    options: dict[str, Any] = {"connect_timeout": "5s", "read_timeout": "60s"}
    where: dict[str, Any] = {"region": region}
    if endpoint is not None:  # a server of one's own: path-style, and plain HTTP if it says so
        options["allow_http"] = endpoint.startswith("http://")
        where |= {"endpoint": endpoint, "virtual_hosted_style_request": False}
    if session.get_credentials() is not None:  # else obstore looks for them itself (and reads anonymously)
        where["credential_provider"] = Boto3CredentialProvider(session)
    return S3Store(bucket, prefix=prefix.rstrip("/") or None, client_options=options,
                   retry_config={"max_retries": 4, "retry_timeout": timedelta(seconds=20)}, **where)  # fmt: skip


class CachedBlobStore:
    """A shared remote store with a copy on this node of every blob it wrote or read, so
    a wake on the node that hibernated reads nothing from the remote, and works while it
    is down. Presence and listing ask the remote: it is what other nodes and garbage
    collection see, and a chunk counts as stored only once the remote has it."""

    def __init__(self, remote: BlobStore, cache: LocalBlobStore) -> None:
        self.remote = remote
        self.cache = cache

    def has(self, key: str) -> bool:
        return self.remote.has(key)

    def put(self, key: str, data: bytes) -> None:
        self.remote.put(key, data)
        self.cache.put(key, data)

    def get(self, key: str) -> bytes:
        try:
            return self.cache.get(key)
        except BlobNotFound:
            data = self.remote.get(key)
        self.cache.put(key, data)
        return data

    def refetch(self, key: str) -> bytes:
        data = self.remote.get(key)
        self.cache.put(key, data)
        return data

    def delete(self, key: str) -> None:
        self.remote.delete(key)
        self.cache.delete(key)

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        return self.remote.list(prefix)


def open_store(url: str, default_root: Path) -> LocalBlobStore | CachedBlobStore:
    """`local` (DATA/blobs), `file:///path`, or `s3://bucket/prefix?endpoint=http://...`
    (cached under DATA/blobs/s3-cache)."""
    if url in ("", "local"):
        return LocalBlobStore(default_root)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        return CachedBlobStore(s3_store(url), LocalBlobStore(default_root / "s3-cache", durable=False))
    raise ValueError(f"unsupported blob store URL {url!r} (use local, file:///dir or s3://bucket)")


def s3_store(url: str) -> S3BlobStore:
    """`s3://bucket/prefix?endpoint=http://...&region=...`, uncached."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    return S3BlobStore(parsed.netloc, endpoint=query.get("endpoint", [None])[0],
                       prefix=parsed.path, region=query.get("region", ["us-east-1"])[0])  # fmt: skip
