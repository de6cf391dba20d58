"""`Fleet`: every live node of a cluster behind the one `Node` interface control uses.

Why it exists: control (sandboxes, agents, files, exec, ingress) is written against one
`Node`. In a cluster the sandboxes are spread over many, each reached over its node API
(`RemoteNode`). The fleet follows etcd's live node set (`NodeWatcher`), keeps a
`RemoteNode` per member, places each new sandbox on the member with the most room, and
routes every later call to the node that holds the sandbox. Placement is latency-aware
and keeps data residency (fleet/scoring.py): close to the request's user (fleet/where.py),
or to the sandbox's home region when it resumes after a loss, and only in the regions
its spec is pinned to.

When a member's lease expires its sandboxes are marked lost (`PlacementTable.lose`) and
shown as hibernated from their last checkpoint: the next request wakes one, which takes
it in on a live node from that checkpoint (`Node.adopt`). The node claims the sandbox in
etcd first, so two replicas waking it at once cannot start it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.membership import NodeEvent, NodeInfo, NodeWatcher
from cloche.fleet import scoring, where
from cloche.fleet.moving import Moving
from cloche.fleet.placements import Placement, PlacementTable
from cloche.fleet.sandbox_regions import SandboxRegions
from cloche.node.api import (
    DiskUsage,
    ExecStream,
    ExpireCallback,
    PoolStatus,
    SandboxEvents,
    SandboxFiles,
    TemplateInfo,
)
from cloche.node.cgroups import Usage
from cloche.node.errors import InvalidState, NodeUnreachable, RuntimeFailure, SandboxNotFound, TemplateNotFound
from cloche.node.net.firewall import Counters
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecResult
from cloche.nodeapi.auth import published_credential
from cloche.nodeapi.client import RemoteNode
from cloche.nodeapi.tls import CA_CERT
from cloche.scheduler.errors import NoCapacity
from cloche.snapshots.gc import GcReport

log = logging.getLogger("cloche.fleet")
T = TypeVar("T")
DRAINING = "draining/"  # etcd: /cloche/draining/<node id> while a node is being drained
REFRESH_S = 1.0  # how often the lost sandboxes and the draining set are read again


@dataclass
class Member:
    node_id: str
    info: NodeInfo
    remote: RemoteNode


class Fleet:
    """The cluster's nodes as one `Node`. `await start()` before use, `close()` after."""

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
        self._recovering: dict[str, asyncio.Lock] = {}
        # resumes a sandbox that is on no node (None: `adopt` on any node); with a snapshot
        # store per region, `Mover.adopt_lost` resumes it in the region that holds its files
        self.adopt_lost: Callable[[Placement], Awaitable[SandboxRecord]] | None = None
        self.homes = SandboxRegions(placements.store)  # each sandbox's region: where it runs, or its files are
        self._homes: dict[str, str] = {}  # sandbox id -> its home region, as last placed or read
        self._placing: dict[str, float] = {}  # node id -> MB of the sandboxes being placed there now
        self.matrix = scoring.fleet_matrix  # the region-to-region RTTs placement scores with
        # makes a snapshot readable in a region before a sandbox starts from it there
        # (None: one store for all regions); `Mover.carry` copies it from the region that has it
        self.carry: Callable[[str, str], Awaitable[None]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    # ---- membership ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.watcher.start()
        await self.moving.start()
        self._tasks = [asyncio.create_task(self._follow(), name="fleet-members"),
                       asyncio.create_task(self._refresh_loop(), name="fleet-refresh")]  # fmt: skip
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
            lost = self.placements.lose(event.node_id, time.time())
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
            placement = self.placements.get(rec.id)
            if placement is None:
                continue
            if placement.node != node_id:
                log.warning("node %s: removing its stale copy of %s (now on %s)", node_id, rec.id, placement.node)
                with contextlib.suppress(RuntimeFailure):
                    await remote.kill(rec.id)
            elif placement.away:  # back before anyone woke it elsewhere: its own again
                self.placements.place(node_id, rec)
                self._lost.pop(rec.id, None)

    async def _lose_absent(self) -> None:
        """Nodes with placements that are not live now were lost while no replica watched."""
        for node in self.placements.live_nodes() - set(self.members):
            self.placements.lose(node, time.time())
        await self.refresh()

    async def refresh(self) -> None:
        """Read the lost sandboxes and the draining nodes again (other replicas change them),
        and try again the registered nodes that did not answer yet (a node registers as it
        starts, a moment before its node API listens)."""
        for node_id, info in list(self.watcher.nodes.items()):
            if node_id not in self.members:
                await self._join(node_id, info)
        eventful = self.placements.eventful()
        self._lost = {p.sandbox_id: replace(p.record, state="hibernated", snapshot=p.checkpoint)
                      for p in eventful if p.away}  # fmt: skip
        self._recovery = {p.sandbox_id: p.recovery() for p in eventful if p.lost_at is not None}
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            entries, _ = await self.etcd.list(DRAINING)
            self.draining = {e.key[len(DRAINING) :] for e in entries}
        for member in list(self.members.values()):
            with contextlib.suppress(RuntimeFailure, RuntimeError):  # RuntimeError: lost (and closed) meanwhile
                self._pools[member.node_id] = await asyncio.to_thread(member.remote.pool_status)
        self._pools = {n: p for n, p in self._pools.items() if n in self.members}

    async def _refresh_loop(self) -> None:
        await self._synced.wait()
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception:
                log.exception("fleet refresh")

    # ---- routing -------------------------------------------------------------------------

    def node_of(self, sandbox_id: str) -> str | None:
        """The live node that holds the sandbox (None when it has none: lost or unknown)."""
        for member in self.members.values():
            if member.remote.has(sandbox_id):
                return member.node_id
        if sandbox_id in self._lost:  # known to be on no node (list() asks this every scheduler tick)
            return None
        # Another replica may have placed it a moment ago, its node's event still on the
        # way here: the placement (written before that replica answered) names the node.
        placed = self.placements.get(sandbox_id)
        if placed is None or placed.away or placed.node not in self.members:
            return None
        return placed.node if self.members[placed.node].remote.fetch(sandbox_id) else None

    def lost_ids(self) -> list[str]:
        """The sandboxes on no node now (their node was lost, or a drain parked them)."""
        return list(self._lost)

    def locate(self, sandbox_id: str) -> dict[str, Any]:
        """Where the sandbox is, for its API view: its node and the node's region ("" when
        on none), its home region, and its last loss of a node (`recovery`: when, the work
        lost, the checkpoint it resumed from)."""
        node = self.node_of(sandbox_id)
        home = self._homes.get(sandbox_id)
        if home is None:
            home = self.homes.get(sandbox_id).region
            if home is not None:
                self._homes[sandbox_id] = home
        return {"node": node or "", "region": self.members[node].info.region if node else "",
                "home_region": home, "recovery": self._recovery.get(sandbox_id)}  # fmt: skip

    def _holder(self, sandbox_id: str, serving: bool = False) -> RemoteNode | None:
        """The sandbox's node; `serving`: the call reaches the sandbox, and the request's
        answer says where (`cloche-region`)."""
        node = self.node_of(sandbox_id)
        if node is None:
            return None
        member = self.members[node]
        if serving:
            where.served_in(member.info.region)
        return member.remote

    def _remote(self, sandbox_id: str) -> RemoteNode:
        remote = self._holder(sandbox_id, serving=True)
        if remote is not None:
            return remote
        if sandbox_id in self._lost:
            raise InvalidState(f"sandbox {sandbox_id} was on a node that was lost; wake it to resume it "
                               "from its last checkpoint")  # fmt: skip
        raise SandboxNotFound(f"sandbox {sandbox_id} not found")

    def choose(self, spec: SandboxSpec, avoid: Collection[str] = (), near: str | None = None) -> Member:
        """The member for `spec` (not draining, not in `avoid`, of its isolation and pinned
        regions) closest to `near` (the user's region) with the most room (fleet/scoring.py)."""
        fits = [m for m in self.members.values()
                if m.node_id not in self.draining and m.node_id not in avoid
                and (not m.info.isolation or spec.isolation in m.info.isolation)]  # fmt: skip
        if not fits and not spec.regions:
            raise NoCapacity(f"no live node can take a {spec.isolation} sandbox "
                             f"({len(self.members)} live, {len(self.draining)} draining)", retry_after_s=1)  # fmt: skip
        candidates = [self._candidate(m) for m in fits]
        best = scoring.pick(candidates, spec.limits.memory_mb, near, spec.regions, self.matrix())
        return self.members[best.node_id]

    def _candidate(self, m: Member) -> scoring.Candidate:
        used = sum(r.spec.limits.memory_mb for r in m.remote.list() if r.state in ("running", "paused"))
        return scoring.Candidate(m.node_id, m.info.region, used + self._placing.get(m.node_id, 0.0), m.info.capacity)

    def regions(self) -> set[str]:
        """The regions of the live nodes."""
        return {m.info.region for m in self.members.values() if m.info.region}

    # ---- identity and records ------------------------------------------------------------

    @property
    def key(self) -> str:
        return "cluster"

    @property
    def default_isolation(self) -> str:
        return "runc"

    @property
    def networking(self) -> bool:
        return all(m.remote.networking for m in self.members.values()) if self.members else True

    def get(self, sandbox_id: str) -> SandboxRecord:
        remote = self._holder(sandbox_id)
        if remote is not None:
            return remote.get(sandbox_id)
        if sandbox_id in self._lost:
            return self._lost[sandbox_id]
        placed = self.placements.get(sandbox_id) if self.moving.active(sandbox_id) else None
        if placed is not None:  # between two regions (another replica moves it): asleep until it lands
            return replace(placed.record, state="hibernated")
        raise SandboxNotFound(f"sandbox {sandbox_id} not found")

    async def current(self, sandbox_id: str) -> SandboxRecord:
        remote = self._holder(sandbox_id)
        return self.get(sandbox_id) if remote is None else await remote.current(sandbox_id)

    def list(self) -> list[SandboxRecord]:
        held = [r for m in self.members.values() for r in m.remote.list()]
        return held + [r for sid, r in self._lost.items() if self.node_of(sid) is None]

    def all_records(self) -> list[SandboxRecord]:
        held = [r for m in self.members.values() for r in m.remote.all_records()]
        return held + [r for sid, r in self._lost.items() if self.node_of(sid) is None]

    def subscribe(self, listener: SandboxEvents) -> None:
        self._listeners.append(listener)
        for member in self.members.values():
            member.remote.subscribe(listener)

    def on_expire(self, callback: ExpireCallback) -> None:
        self._expired.append(callback)
        for member in self.members.values():
            member.remote.on_expire(callback)

    # ---- lifecycle -----------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True,
                     snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        async def make(member: Member) -> SandboxRecord:
            if snapshot is not None and self.carry is not None:
                await self.carry(snapshot, member.info.region)
            return await member.remote.create(spec, use_pool=use_pool, snapshot=snapshot)

        return await self._place(spec, make)

    async def adopt(self, lost: SandboxRecord, snapshot: str | None, avoid: Collection[str] = ()) -> SandboxRecord:
        rec = await self._place(lost.spec, lambda m: m.remote.adopt(lost, snapshot), avoid)
        self._lost.pop(rec.id, None)
        return rec

    async def _place(self, spec: SandboxSpec, make: Callable[[Member], Awaitable[SandboxRecord]],
                     avoid: Collection[str] = ()) -> SandboxRecord:  # fmt: skip
        """Make the sandbox on the best member for it (not in `avoid`; close to the
        request's user, fleet/scoring.py); on the next one when that one does not answer
        (it may be stopping: it leaves etcd a moment after it stops). The node's region is
        its home now (`SandboxRegions`: its snapshots go to that region's store)."""
        tried: set[str] = set(avoid)
        while True:
            member = self.choose(spec, tried, where.user_region())
            self._placing[member.node_id] = self._placing.get(member.node_id, 0.0) + spec.limits.memory_mb
            try:
                rec = await make(member)
            except NodeUnreachable as e:
                log.warning("placing on %s failed (%s); trying another node", member.node_id, e)
                tried.add(member.node_id)
                continue
            finally:
                self._placing[member.node_id] -= spec.limits.memory_mb
            self.placements.place(member.node_id, rec)
            if member.info.region:
                self.homes.record(rec.id, member.info.region)
                self._homes[rec.id] = member.info.region
            where.served_in(member.info.region)
            return rec

    def recovering(self, sandbox_id: str) -> asyncio.Lock:
        """Held while the sandbox moves between nodes (a resume, a drain's or a region move)."""
        return self._recovering.setdefault(sandbox_id, asyncio.Lock())

    async def _settled(self, sandbox_id: str) -> None:
        """Wait while the sandbox moves (its node would wake it where it is leaving): between
        nodes here, or to another region by any replica."""
        await self.moving.wait(sandbox_id)
        lock = self._recovering.get(sandbox_id)
        if lock is not None and lock.locked():
            async with lock:
                pass

    async def _recover(self, sandbox_id: str) -> SandboxRecord:
        """Resume a lost sandbox on a live node from its last checkpoint."""
        async with self.recovering(sandbox_id):
            if self.node_of(sandbox_id) is not None:  # another request brought it back meanwhile
                return await self._remote(sandbox_id).wake(sandbox_id)
            placement = self.placements.get(sandbox_id)
            if placement is None:
                raise SandboxNotFound(f"sandbox {sandbox_id} not found")
            if not placement.away and placement.node in self.members:
                where.served_in(self.members[placement.node].info.region)
                return await self.members[placement.node].remote.wake(sandbox_id)
            started = time.monotonic()
            if self.adopt_lost is None:
                rec = await self.adopt(placement.record, placement.checkpoint)
            else:
                rec = await self.adopt_lost(placement)
            log.info("sandbox %s resumed on %s from checkpoint %s in %.2f s (lost %.1f s of work)", sandbox_id,
                     self.node_of(sandbox_id), placement.checkpoint, time.monotonic() - started,
                     placement.lost_work_s or 0.0)  # fmt: skip
            return rec

    async def kill(self, sandbox_id: str) -> None:
        remote = self._holder(sandbox_id)
        if remote is None and sandbox_id not in self._lost:
            raise SandboxNotFound(f"sandbox {sandbox_id} not found")
        if remote is not None:
            await remote.kill(sandbox_id)
        self.placements.forget(sandbox_id)
        self._lost.pop(sandbox_id, None)
        self._homes.pop(sandbox_id, None)

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        return await self._remote(sandbox_id).stop(sandbox_id)

    async def start_sandbox(self, sandbox_id: str) -> SandboxRecord:
        remote = self._holder(sandbox_id, serving=True)
        return await self._recover(sandbox_id) if remote is None else await remote.start_sandbox(sandbox_id)

    async def wake(self, sandbox_id: str) -> SandboxRecord:
        """A running sandbox (as its node's events last said) costs no call to the node:
        waking is on the path of every exec. Should the node have paused it meanwhile, the
        exec that follows finds out and wakes it (`_awake`)."""
        await self._settled(sandbox_id)
        remote = self._holder(sandbox_id, serving=True)
        if remote is None:
            return await self._recover(sandbox_id)
        rec = remote.get(sandbox_id)
        return rec if rec.state == "running" else await remote.wake(sandbox_id)

    async def _awake(self, sandbox_id: str, call: Callable[[RemoteNode], Awaitable[T]]) -> T:
        """`call` on the sandbox's node, waking it first if the node says it is not running."""
        await self._settled(sandbox_id)
        remote = self._remote(sandbox_id)
        try:
            return await call(remote)
        except InvalidState:  # paused or stopped on the node meanwhile (a wake of a running one does nothing)
            await remote.wake(sandbox_id)
            return await call(remote)

    def touch(self, sandbox_id: str) -> None:
        self._remote(sandbox_id).touch(sandbox_id)

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord:
        return await self._remote(sandbox_id).hibernate(sandbox_id, keep_local)

    async def snapshot(self, sandbox_id: str) -> str:
        return await self._remote(sandbox_id).snapshot(sandbox_id)

    def snapshot_bytes(self, manifest: str) -> int:
        return self._any().snapshot_bytes(manifest)

    async def fork(self, sandbox_id: str, spec: SandboxSpec | None = None) -> SandboxRecord:
        """A copy of the sandbox's files, placed like any new sandbox (the store is shared)."""
        source = self.get(sandbox_id)
        digest = await self.snapshot(sandbox_id)
        return await self.create(spec or source.spec, use_pool=False, snapshot=digest)

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        return await self._remote(sandbox_id).pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        return await self._remote(sandbox_id).resume(sandbox_id)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord:
        return await self._remote(sandbox_id).set_network(sandbox_id, policy)

    async def check_network(self, policy: NetworkPolicy) -> None:
        await self._any().check_network(policy)

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        return await self._remote(sandbox_id).set_timeout(sandbox_id, timeout_s)

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        return await self._remote(sandbox_id).set_env(sandbox_id, env)

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord:
        return await self._remote(sandbox_id).resize(sandbox_id, limits)

    # ---- capacity and usage --------------------------------------------------------------

    def _any(self) -> RemoteNode:
        for member in self.members.values():
            return member.remote
        raise RuntimeFailure("no node is live in the cluster")

    def capacity(self) -> dict[str, float]:
        total = {"cpu": 0.0, "memory_mb": 0.0}
        for member in self.members.values():
            for k, v in member.remote.capacity().items():
                total[k] = total.get(k, 0.0) + v
        return total

    def usage(self, sandbox_id: str) -> Usage:
        return self._remote(sandbox_id).usage(sandbox_id)

    def disk_usage(self, sandbox_id: str) -> DiskUsage:
        return self._remote(sandbox_id).disk_usage(sandbox_id)

    def pool_status(self) -> PoolStatus:
        pools = list(self._pools.values())
        if not pools:
            return PoolStatus("base", self.default_isolation, 0, 0, 0)
        return PoolStatus(pools[0].template, pools[0].isolation, sum(p.size for p in pools),
                          sum(p.ready for p in pools), sum(p.claims for p in pools))  # fmt: skip

    def set_pool_size(self, size: int) -> None:
        """`size` warm sandboxes in all, spread over the members."""
        members = list(self.members.values())
        for i, member in enumerate(members):
            member.remote.set_pool_size(size // len(members) + (1 if i < size % len(members) else 0))

    def network_counters(self) -> dict[str, Counters]:
        return {sid: c for m in self.members.values() for sid, c in m.remote.network_counters().items()}

    def network_stats(self, sandbox_id: str) -> dict[str, int] | None:
        if self.node_of(sandbox_id) is None:  # on no node: no link, as asleep
            return None
        return self._remote(sandbox_id).network_stats(sandbox_id)

    # ---- templates and garbage -----------------------------------------------------------

    def template_names(self) -> list[str]:
        names = [set(m.remote.template_names()) for m in self.members.values()]
        return sorted(set.intersection(*names)) if names else []

    def template(self, name: str) -> TemplateInfo:
        if name not in self.template_names():
            raise TemplateNotFound(f"template {name!r} is not on every node")
        return self._any().template(name)

    async def import_template(self, name: str, tarball: AsyncIterable[bytes], on_base: bool = False) -> TemplateInfo:
        """Every member gets the template (the stream is spooled once, then sent to each)."""
        with tempfile.TemporaryFile() as spool:
            async for chunk in tarball:
                spool.write(chunk)
            info: TemplateInfo | None = None
            for member in self.members.values():
                spool.seek(0)
                info = await member.remote.import_template(name, _chunks(spool), on_base)
        if info is None:
            raise RuntimeFailure("no node is live in the cluster")
        return info

    def delete_template(self, name: str) -> None:
        for member in self.members.values():
            member.remote.delete_template(name)

    def collect_garbage(self, grace_s: float = 300.0) -> GcReport:
        raise InvalidState("snapshot garbage collection is per node; in a cluster the snapshot store is shared, "
                           "and collecting it from one node's records would delete others' chunks")  # fmt: skip

    # ---- files, exec, ingress ------------------------------------------------------------

    def files(self, sandbox_id: str) -> SandboxFiles:
        return self._remote(sandbox_id).files(sandbox_id)

    async def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        return await self._awake(sandbox_id, lambda r: r.exec(sandbox_id, request))

    async def open_exec(self, sandbox_id: str, request: ExecRequest) -> ExecStream:
        return await self._awake(sandbox_id, lambda r: r.open_exec(sandbox_id, request))

    async def signal(self, sandbox_id: str, pid: int, signo: int) -> int:
        return await self._remote(sandbox_id).signal(sandbox_id, pid, signo)

    async def connect(self, sandbox_id: str, port: int,
                      limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        return await self._remote(sandbox_id).connect(sandbox_id, port, limit)

    async def connect_host(self, sandbox_id: str, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await self._remote(sandbox_id).connect_host(sandbox_id, name)

    def host_file_tail(self, sandbox_id: str, name: str, nbytes: int) -> bytes:
        return self._remote(sandbox_id).host_file_tail(sandbox_id, name, nbytes)

    def remove_host_file(self, sandbox_id: str, name: str) -> None:
        self._remote(sandbox_id).remove_host_file(sandbox_id, name)

    # ---- for operators -------------------------------------------------------------------

    def summary(self) -> list[dict[str, Any]]:
        """The live nodes as `GET /v1/nodes` lists them in a cluster."""
        out = []
        for member in sorted(self.members.values(), key=lambda m: m.node_id):
            records = member.remote.list()
            out.append({"id": member.node_id, "address": member.info.address, "region": member.info.region,
                        "zone": member.info.zone, "isolation": list(member.info.isolation),
                        "state": "draining" if member.node_id in self.draining else "ready",
                        "capacity": member.remote.capacity(), "load": member.info.load,
                        "sandboxes": len(records),
                        "running": sum(1 for r in records if r.state == "running"),
                        "version": member.info.version})  # fmt: skip
        return out


async def _chunks(spool: Any, size: int = 1 << 20) -> AsyncIterator[bytes]:
    while chunk := spool.read(size):
        yield chunk
