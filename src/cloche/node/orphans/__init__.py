"""What cloche nodes whose data directory vanished left on the host, found and removed.

Why: a node's durable half (records, disk images) lives in its data directory and its
runtime half (runc containers, mounts, cgroups, veth links, an nftables table, host-wide
uid and address claims) on the host, tagged with the node key (a hash of the data dir's
path). A node that restarts on the same data dir reconciles its own leftovers. But when
the data dir is deleted or moved (a crashed test run, a machine re-provisioned, a data
dir renamed), no node will ever compute that key again: its sandboxes would run forever,
its loop devices, uid ranges and addresses would stay taken. This module finds them.

A key is judged by its runtime directory `<run root>/<key>/`:

* `owner` names a data directory that does not exist: orphaned, everything goes;
* `owner` names one that exists: live, nothing of it is touched;
* no `owner` file (a node started before owner files existed, or one starting right
  now): unknown owner, reported but removed only when the caller forces it;
* no runtime directory at all, but objects tagged with the key (links, the table,
  cgroups, claims): orphaned, since a live node always has its directory. A node that
  is closing removes its directory a moment before its table, so such objects count
  only when they are still there after a short settle and the directory is still absent.

Every removal re-checks, just before it acts, that the object is still the orphan's
(claim files still name the key, a link still has its alias, the key is still not
live), so running it next to live nodes is safe. The node runtime calls it at start for
every other key: `collect(run_root, skip={own_key}, include_unknown=False)`.

The package: model.py (orphans, kinds, judging a key), scan.py (the read-only
inventory), removal.py (re-checked removal); `collect` here does both for a node's start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from cloche.node.orphans.model import CLAIM_DIRS, ORDER, RUN_ROOT, SETTLE_S, Failure, Orphan
from cloche.node.orphans.removal import remove
from cloche.node.orphans.scan import cgroup_paths, containers, find_orphans, mounts_under
from cloche.node.uids import HostClaims

__all__ = ["ORDER", "Failure", "Orphan", "cgroup_paths", "collect", "containers", "drop_ownerless_claims",
           "find_orphans", "mounts_under", "remove"]  # fmt: skip

log = logging.getLogger("cloche.node.orphans")


def collect(run_root: Path = RUN_ROOT, *, skip: Iterable[str] = (), include_unknown: bool = False,
            settle_s: float = SETTLE_S) -> list[Failure]:  # fmt: skip
    """Find and remove in one go, logging each removal (for a node's start: pass its own
    key in `skip`; nodes of unknown owner are left alone)."""

    def logged(o: Orphan, action: str) -> None:
        log.info("orphan of node %s (%s): %s %s: %s", o.key, o.reason, o.kind, o.name, action)

    found = find_orphans(run_root, skip=skip, include_unknown=include_unknown, settle_s=settle_s)
    failures = remove(found, run_root=run_root, force_unknown=include_unknown, on_done=logged)
    drop_ownerless_claims(run_root, settle_s)
    for f in failures:
        log.warning("could not remove %s %s of node %s: %s", f.orphan.kind, f.orphan.name, f.orphan.key, f.error)
    return failures


def drop_ownerless_claims(run_root: Path = RUN_ROOT, settle_s: float = SETTLE_S) -> int:
    """Claim markers that name no node (left by a kill -9 mid-allocation), removed."""
    dropped = sum(HostClaims.drop_ownerless(run_root / sub, settle_s) for sub in CLAIM_DIRS)
    if dropped:
        log.info("removed %d claim markers that named no node", dropped)
    return dropped
