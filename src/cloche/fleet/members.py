"""The fleet's live members: which nodes it reaches, and which sandboxes are on none.

Why it exists: `Fleet` routes and places over a set of nodes that changes under it.
Following that set is its own job: etcd's live nodes (`NodeWatcher`) joined as a
`RemoteNode` each (a node registers a moment before its API listens, so joining is
retried), a lost node's sandboxes marked lost (`PlacementTable.lose`) and shown
hibernated from their last checkpoint, a node that comes back reconciled with where its
sandboxes went meanwhile, the draining set followed by a watch of its etcd keys (a drain
another replica finished a moment ago already keeps sandboxes off that node), and the
lost sandboxes and warm pools read again every `REFRESH_S`. The layers above
(fleet/routing.py, fleet/placing.py, fleet/fleet.py) read this state; only this module
changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloche.cluster.etcd import Change, Etcd
from cloche.cluster.membership import NodeEvent, NodeInfo, NodeWatcher
from cloche.fleet.moving import Moving
from cloche.fleet.placements import PlacementTable
from cloche.node.api import ExpireCallback, PoolStatus, SandboxEvents
from cloche.node.errors import RuntimeFailure
from cloche.node.records import SandboxRecord
from cloche.nodeapi.auth import published_credential
from cloche.nodeapi.client import RemoteNode
from cloche.nodeapi.tls import CA_CERT
from cloche.store.engine import StoreUnavailable

log = logging.getLogger("cloche.fleet")
DRAINING = "draining/"  # etcd: /cloche/draining/<node id> while a node is being drained
REFRESH_S = 1.0  # how often the lost sandboxes and warm pools are read again (and a broken watch retried)


@dataclass
class Member:
    node_id: str
    info: NodeInfo
    remote: RemoteNode


class FleetMembers:
    """The live nodes (`members`), the draining ones and the lost sandboxes, kept current."""

    def __init__(self, etcd: Etcd, cluster_dir: Path, placements: PlacementTable) -> None:
        self.etcd = etcd
        self.cluster_dir = cluster_dir
        self.placements = placements
        self.watcher = NodeWatcher(etcd)
        self.moving = Moving(etcd)  # the region moves in progress, on any replica
        self.members: dict[str, Member] = {}
        self.draining: set[str] = set()
        self._lost: dict[str, SandboxRecord] = {}  # sandboxes on no node, shown hibernated at their checkpoint
        self._recovery: dict[str, Any] = {}  # sandbox id -> its last loss (Placement.recovery)
        self._joining: set[str] = set()  # nodes being connected to (a join and a refresh may race)
        self._pools: dict[str, PoolStatus] = {}  # node id -> its warm pool, as last read (the scheduler reads it often)
        self._listeners: list[SandboxEvents] = []
        self._expired: list[ExpireCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    # ---- membership ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.watcher.start()
        await self.moving.start()
        drained = await self._relist_draining()
        self._tasks = [asyncio.create_task(self._follow(), name="fleet-members"),
                       asyncio.create_task(self._refresh_loop(), name="fleet-refresh"),
                       asyncio.create_task(self.etcd.follow(DRAINING, drained, self._apply_draining,
                                                            self._relist_draining, REFRESH_S),
                                           name="fleet-draining")]  # fmt: skip
        await asyncio.wait_for(self._synced.wait(), 30)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.watcher.close()
        await self.moving.close()
        for member in list(self.members.values()):
            await member.remote.close()
        self.members.clear()

    async def _follow(self) -> None:
        for node_id, info in list(self.watcher.nodes.items()):  # those live now, before the first event
            await self._join(node_id, info)
        await self._lose_absent()
        self._synced.set()
        async for event in self.watcher.events():
            try:
                await self._on(event)
            except Exception:
                log.exception("node %s: handling %s failed", event.node_id, event.kind)

    async def _on(self, event: NodeEvent) -> None:
        if event.kind == "lost":
            member = self.members.pop(event.node_id, None)
            if member is not None:
                await member.remote.close()
            lost = await asyncio.to_thread(self.placements.lose, event.node_id, time.time())
            log.warning("node %s lost: %d sandboxes to resume elsewhere", event.node_id, lost)
            await self.refresh()
        elif event.node_id in self.members:
            self.members[event.node_id].info = event.info
        else:
            await self._join(event.node_id, event.info)

    async def _join(self, node_id: str, info: NodeInfo) -> None:
        if node_id in self.members or node_id in self._joining:
            return
        self._joining.add(node_id)
        try:
            await self._connect(node_id, info)
        finally:
            self._joining.discard(node_id)

    async def _connect(self, node_id: str, info: NodeInfo) -> None:
        credential = published_credential(self.cluster_dir, node_id)
        remote = RemoteNode(info.address, credential, self.cluster_dir / CA_CERT)
        try:
            await remote.start()
        except (RuntimeFailure, OSError, TimeoutError) as e:
            log.warning("node %s at %s is registered but not reachable yet: %s", node_id, info.address, e)
            await remote.close()
            return
        for listener in self._listeners:
            remote.subscribe(listener)
        for callback in [self.placements.forget, *self._expired]:
            remote.on_expire(callback)
        if node_id not in self.watcher.nodes:  # lost while we connected
            await remote.close()
            return
        self.members[node_id] = Member(node_id, info, remote)
        await self._reconcile(node_id, remote)
        log.info("node %s joined (%s, region %s)", node_id, info.address, info.region or "-")

    async def _reconcile(self, node_id: str, remote: RemoteNode) -> None:
        """A node that (re)joins may hold copies of sandboxes that moved while it was away:
        those go; those still placed on it are its own again."""
        for rec in remote.list():
            placement = await asyncio.to_thread(self.placements.get, rec.id)
            if placement is None:
                continue
            if placement.node != node_id:
                log.warning("node %s: removing its stale copy of %s (now on %s)", node_id, rec.id, placement.node)
                with contextlib.suppress(RuntimeFailure):
                    await remote.kill(rec.id)
            elif placement.away:  # back before anyone woke it elsewhere: its own again
                await asyncio.to_thread(self.placements.place, node_id, rec)
                self._lost.pop(rec.id, None)

    async def _lose_absent(self) -> None:
        """Nodes with placements that are not live now were lost while no replica watched."""
        for node in await asyncio.to_thread(self.placements.live_nodes) - set(self.members):
            await asyncio.to_thread(self.placements.lose, node, time.time())
        await self.refresh()

    async def refresh(self) -> None:
        """Read the lost sandboxes and the warm pools again (other replicas change them),
        and try again the registered nodes that did not answer yet (a node registers as it
        starts, a moment before its node API listens)."""
        for node_id, info in list(self.watcher.nodes.items()):
            if node_id not in self.members:
                await self._join(node_id, info)
        eventful = await asyncio.to_thread(self.placements.eventful)  # off the loop: PostgreSQL may be slow or away
        self._lost = {p.sandbox_id: p.asleep() for p in eventful if p.away}
        self._recovery = {p.sandbox_id: p.recovery() for p in eventful if p.lost_at is not None}
        for member in list(self.members.values()):
            with contextlib.suppress(RuntimeFailure, RuntimeError):  # RuntimeError: lost (and closed) meanwhile
                self._pools[member.node_id] = await asyncio.to_thread(member.remote.pool_status)
        self._pools = {n: p for n, p in self._pools.items() if n in self.members}

    async def _relist_draining(self) -> int:
        entries, revision = await self.etcd.list(DRAINING)
        self.draining = {e.key[len(DRAINING) :] for e in entries}
        return revision

    async def _apply_draining(self, change: Change) -> None:
        node_id = change.entry.key[len(DRAINING) :]
        if change.deleted:
            self.draining.discard(node_id)
        else:
            self.draining.add(node_id)

    async def _refresh_loop(self) -> None:
        await self._synced.wait()
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except StoreUnavailable as e:  # cut off from PostgreSQL: said once a second, without a traceback
                log.warning("fleet refresh: %s", e)
            except Exception:
                log.exception("fleet refresh")

    def subscribe(self, listener: SandboxEvents) -> None:
        self._listeners.append(listener)
        for member in self.members.values():
            member.remote.subscribe(listener)

    def on_expire(self, callback: ExpireCallback) -> None:
        self._expired.append(callback)
        for member in self.members.values():
            member.remote.on_expire(callback)
