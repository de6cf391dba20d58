"""Copying a snapshot between two regions' stores (real directory stores, real captures):
only the chunks the target lacks travel, the copy restores byte for byte, and regions
that share a store copy nothing. And the per-region store setting as an operator writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloche.config import Settings
from cloche.snapshots.regions import RegionStores
from cloche.snapshots.store import WriteStats
from cloche.snapshots.tree import capture, chunk_digests, restore


def _stores(tmp_path: Path) -> RegionStores:
    return RegionStores({"eu": f"file://{tmp_path / 'eu'}", "us": f"file://{tmp_path / 'us'}"},
                        f"file://{tmp_path / 'shared'}")  # fmt: skip


def _capture(stores: RegionStores, region: str, root: Path, parent: dict | None = None) -> tuple[str, dict]:
    store = stores.store(region)
    manifest = capture(root, 0, store, parent, WriteStats())
    return store.put_manifest(manifest, WriteStats()), manifest


def test_only_missing_chunks_are_copied_and_the_copy_restores(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "big").write_bytes(os.urandom(1_000_000))
    (work / "small.txt").write_text("hello")
    first, manifest = _capture(stores, "eu", work)
    report = stores.copy(first, "eu", "us")
    assert report.chunks_copied == len(chunk_digests(manifest)) and report.chunks_present == 0
    assert report.bytes_copied > 1_000_000  # random bytes do not compress
    assert stores.copy(first, "eu", "us").bytes_copied == 0  # there already: nothing to do

    with open(work / "big", "ab") as f:  # a change at the end: the earlier chunks are the same
        f.write(os.urandom(100_000))
    second, _ = _capture(stores, "eu", work, manifest)
    again = stores.copy(second, "eu", "us")
    assert again.chunks_present > 0 and 0 < again.bytes_copied < report.bytes_copied / 2

    out = tmp_path / "out"
    out.mkdir()
    us = stores.store("us")
    restore(us.get_manifest(second), out, 0, us)
    assert (out / "big").read_bytes() == (work / "big").read_bytes()
    assert (out / "small.txt").read_text() == "hello"


def test_regions_sharing_a_store_copy_nothing(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    assert stores.shared("ap", "sa") and not stores.shared("eu", "us")
    work = tmp_path / "work"
    work.mkdir()
    (work / "f").write_bytes(os.urandom(50_000))
    digest, _ = _capture(stores, "ap", work)
    assert stores.copy(digest, "ap", "sa").bytes_copied == 0


def test_region_blob_urls_name_each_region_s_store() -> None:
    s = Settings(blob_url="s3://main/cloche").apply_env({
        "CLOCHE_REGION_BLOB_URLS": "eu=s3://b-eu/c?endpoint=http://h:1, us=file:///srv/us"})  # fmt: skip
    assert s.region_blob_url("eu") == "s3://b-eu/c?endpoint=http://h:1"
    assert s.region_blob_url("us") == "file:///srv/us"
    assert s.region_blob_url("ap") == "s3://main/cloche"
    with pytest.raises(ValueError, match="region=url"):
        Settings(region_blob_urls="eu").blob_urls()
