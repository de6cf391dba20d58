"""Snapshot endpoints: take one of a sandbox, list, look up and delete them."""

from __future__ import annotations

from ..models import SnapshotInfo
from .call import TRANSFER_TIMEOUT, Call, sbx, seg
from .responses import parse_items, parse_json, parse_none


def create_snapshot(sandbox_id: str, name: str) -> Call[SnapshotInfo]:
    """``POST /v1/sandboxes/{id}/snapshots``: save the sandbox's current files as ``name``."""
    return Call(
        "POST",
        sbx(sandbox_id, "snapshots"),
        parse_json(SnapshotInfo),
        json={"name": name},
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_snapshots() -> Call[list[SnapshotInfo]]:
    """``GET /v1/snapshots``."""
    return Call("GET", "/v1/snapshots", parse_items(SnapshotInfo))


def get_snapshot(snapshot_id: str) -> Call[SnapshotInfo]:
    """``GET /v1/snapshots/{id}``."""
    return Call("GET", f"/v1/snapshots/{seg(snapshot_id)}", parse_json(SnapshotInfo))


def delete_snapshot(snapshot_id: str) -> Call[None]:
    """``DELETE /v1/snapshots/{id}``."""
    return Call("DELETE", f"/v1/snapshots/{seg(snapshot_id)}", parse_none)
