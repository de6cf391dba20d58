"""`Fleet`: every live node of a cluster behind the one `Node` interface control uses.

Why it exists: control (sandboxes, agents, files, exec, ingress) is written against one
`Node`. In a cluster the sandboxes are spread over many, each reached over its node API
(`RemoteNode`). The fleet follows etcd's live node set (`NodeWatcher`), keeps a
`RemoteNode` per member, places each new sandbox on a member (fleet/placing.py), and
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
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from cloche.fleet.placing import FleetPlacing
from cloche.node.api import DiskUsage, ExecStream, PoolStatus, SandboxFiles, TemplateInfo
from cloche.node.cgroups import Usage
from cloche.node.errors import InvalidState, RuntimeFailure, SandboxNotFound, TemplateNotFound
from cloche.node.net.firewall import Counters
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecResult
from cloche.nodeapi.client import RemoteNode
from cloche.snapshots.gc import GcReport

T = TypeVar("T")


class Fleet(FleetPlacing):
    """The cluster's nodes as one `Node`. `await start()` before use, `close()` after.

    The layers under it: fleet/members.py follows the live nodes, fleet/routing.py finds
    a sandbox's node, fleet/placing.py places and resumes sandboxes; the `Node` methods
    here hand each call to the sandbox's node (or to every member)."""

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
        if self.is_away(sandbox_id):
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

    async def kill(self, sandbox_id: str) -> None:
        remote = self._holder(sandbox_id)
        if remote is None and not self.is_away(sandbox_id):
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
