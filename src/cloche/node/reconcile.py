"""Reconciling the node's records with what really is on the host, once at start.

Why it exists: a node may stop (or crash) with sandboxes running, half-made or gone.
Before it serves anything it adopts the containers that still run with their network
link, marks the dead ones stopped (files kept), and removes everything half-made or
unknown: containers, bundles, cgroups, links. That is one job apart from the lifecycle.
"""

from __future__ import annotations

import logging
import shutil

from cloche.node import cgroups
from cloche.node.provision import SandboxBuilder
from cloche.node.records import SandboxRecord

log = logging.getLogger("cloche.node")


def reconcile(builder: SandboxBuilder, node_key: str) -> None:
    """Fill `builder.table` from the records on disk and clean the host to match (blocking)."""
    builder.templates.get("base")  # built once, before the first create needs it
    statuses = {cid: status for d in builder.drivers.values() for cid, status in d.statuses().items()}
    running = set(statuses)
    known = set()
    sandboxes = builder.table.records
    for rec in builder.records.load_all():
        known.add(rec.id)
        if rec.state == "creating" or rec.pooled:
            builder.destroy(rec)
            continue
        builder.uids.claim(rec.uid_index, node_key)
        status = statuses.get(rec.id)
        if rec.state in ("running", "paused") and status in ("running", "paused") and _adopt_network(builder, rec):
            rec.state = status
            log.info("adopted sandbox %s (%s)", rec.id, status)
        else:
            builder.teardown(rec.id)
            rec.net = None
            if rec.state != "hibernated":
                rec.state = "stopped"
        builder.records.save(rec)
        sandboxes[rec.id] = rec
    for d in builder.records.orphan_dirs():
        shutil.rmtree(d, ignore_errors=True)
    for tmp in builder.records.root.glob("*/disk.img.tmp"):
        tmp.unlink()
    for cid in running - known:
        builder.teardown(cid)
    for d in builder.run.iterdir():
        if d.is_dir() and d.name.startswith("sb_") and d.name not in sandboxes:
            builder.teardown(d.name)
    cgroups.remove_tree(builder.cgroup_parent)
    if builder.network:
        for ifname in builder.network.reap_unknown({r.id for r in sandboxes.values() if r.net}):
            log.info("removed leftover link %s", ifname)


def _adopt_network(builder: SandboxBuilder, rec: SandboxRecord) -> bool:
    """A surviving container keeps its link; without it, it is not adopted."""
    if builder.network is None or rec.net is None:
        return builder.network is None
    try:
        pid = int((builder.run / rec.id / "pid").read_text())
    except (OSError, ValueError):
        pid = 0
    if pid and builder.network.adopt(rec.id, rec.net, f"/proc/{pid}/ns/net", rec.spec.network):
        return True
    log.warning("sandbox %s lost its network link; restarting it", rec.id)
    return False
