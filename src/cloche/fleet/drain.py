"""Asking the cluster to drain a node, and waiting until it has (`cloche node drain`).

Why it exists: a rolling upgrade stops each node in turn, and every agent must stay
reachable meanwhile. The request is a key in etcd (`/cloche/draining/<node id>`), so the
node's own host can make it (a Kubernetes preStop hook) without an API key: placements
avoid the node at once, the leader moves its sandboxes (fleet/leader.py) and marks the
key done. The node removes the key when it starts again, and takes placements again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from cloche.cluster.etcd import Etcd
from cloche.fleet.members import DRAINING

POLL_S = 0.5


class DrainTimeout(Exception):
    pass


async def drain(etcd: Etcd, node_id: str, timeout_s: float,
                progress: Callable[[str], None] = lambda _: None) -> int:  # fmt: skip
    """Drain `node_id`; returns how many sandboxes were moved. DrainTimeout when the
    leader has not finished within `timeout_s` (the node stays draining)."""
    key = DRAINING + node_id
    await etcd.put(key, json.dumps({"state": "requested", "at": time.time()}).encode())
    progress(f"drain of {node_id} requested")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = await etcd.get(key)
        if entry is not None:
            doc = json.loads(entry.value)
            if doc.get("state") == "done":
                return int(doc.get("moved", 0))
        await asyncio.sleep(POLL_S)
    raise DrainTimeout(f"node {node_id} was not drained within {timeout_s:g} s (is a server replica running?)")


async def undrain(etcd: Etcd, node_id: str) -> bool:
    """The node takes placements again; whether it had been draining."""
    return await etcd.delete(DRAINING + node_id)
