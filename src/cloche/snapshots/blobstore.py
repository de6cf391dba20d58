"""Blob stores behind one interface: a local directory (embedded default) and
S3-compatible object storage. Keys are slash-separated names such as chunks/<sha256>."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    def has(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes) -> None:
        """Store atomically: a reader sees the whole blob or none of it."""

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, last-modified unix time) of every blob under prefix."""


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
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
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def touch(self, key: str) -> None:
        """Refresh a blob's age so a concurrent garbage collection keeps it."""
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

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
    """Any S3-compatible server. PUTs of a single object are atomic in S3."""

    def __init__(self, bucket: str, endpoint: str | None = None, prefix: str = "",
                 region: str = "us-east-1", client: Any = None) -> None:  # fmt: skip
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.s3 = client or boto3.client("s3", endpoint_url=endpoint, region_name=region)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def has(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def touch(self, key: str) -> None:
        self.s3.copy_object(Bucket=self.bucket, Key=self._key(key), MetadataDirective="REPLACE",
                            CopySource={"Bucket": self.bucket, "Key": self._key(key)},
                            Metadata={"touched": str(time.time())})  # fmt: skip

    def get(self, key: str) -> bytes:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp()


def open_store(url: str, default_root: Path) -> LocalBlobStore | S3BlobStore:
    """`local` (DATA/blobs), `file:///path`, or `s3://bucket/prefix?endpoint=http://...`."""
    if url in ("", "local"):
        return LocalBlobStore(default_root)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        query = parse_qs(parsed.query)
        return S3BlobStore(parsed.netloc, endpoint=query.get("endpoint", [None])[0],
                           prefix=parsed.path, region=query.get("region", ["us-east-1"])[0])  # fmt: skip
    raise ValueError(f"unsupported blob store URL {url!r} (use local, file:///dir or s3://bucket)")
