"""The scheduler in the server: admission, placement, preemption, resize and pool
sizing for the embedded node.

`NodeView` adapts the NodeRuntime to the scheduler's Node model (capacity from the
settings or the host, allocation from the sandboxes' requests, live usage from their
cgroups). `LocalScheduler` is what SandboxService calls: `admit` is an async context
manager around a create. Every create goes through the fair queue; a background loop
dispatches it as soon as it fits, hibernates least-recently-used idle sandboxes of
lower or equal priority to make room, and answers 503 with Retry-After once the
create's `wait_s` is over. The same loop keeps the node healthy when wakes (which do
not queue: a user is waiting on them) push it over its allocatable or usage high-water
mark, and resizes the warm pool from its claim rate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloche.control.errors import ApiError
from cloche.node import cgroups
from cloche.node.spec import Limits, SandboxSpec
from cloche.scheduler import policies
from cloche.scheduler.admission import FairQueue, Quota, QuotaLedger, dispatch
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.filters import ResourceFit
from cloche.scheduler.model import INF, ZERO, Ask, Node, Overcommit, Resources
from cloche.scheduler.pipeline import Placement
from cloche.scheduler.pools import PoolSizer
from cloche.scheduler.preemption import Victim, plan, reclaim
from cloche.scheduler.scorers.latency import LatencyMatrix

if TYPE_CHECKING:
    from cloche.config import Settings
    from cloche.node.records import SandboxRecord
    from cloche.node.runtime import NodeRuntime
    from cloche.store.db import Store, Tenant

log = logging.getLogger("cloche.scheduler")
ACTIVE = ("running", "paused")
BUSY_CPU = 0.05  # cores: a sandbox using more than this is not idle, whatever its last API call


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024


def anon_memory_mb(rel: str) -> float:
    """Memory a cgroup cannot give back without swap (anonymous pages), in MB."""
    if cgroups.is_v2():
        path, keys = cgroups.ROOT / rel.strip("/") / "memory.stat", ("anon",)
    else:
        path, keys = cgroups.ROOT / "memory" / rel.strip("/") / "memory.stat", ("total_rss",)
    try:
        for line in Path(path).read_text().splitlines():
            name, value = line.split()
            if name in keys:
                return int(value) / 1024 / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def request_of(limits: Limits) -> Resources:
    return Resources(limits.cpu, limits.memory_mb, limits.disk_mb)


class NodeView:
    """The embedded NodeRuntime as a scheduler Node."""

    def __init__(self, runtime: NodeRuntime, settings: Settings) -> None:
        self.runtime = runtime
        disk = settings.node_disk_mb or INF
        cpu = settings.node_cpu or float(os.cpu_count() or 1)
        capacity = Resources(cpu, settings.node_memory_mb or _mem_total_mb(), disk)
        ratio = Overcommit(settings.cpu_overcommit, settings.memory_overcommit, settings.disk_overcommit)
        self.node = Node(runtime.key, capacity, {"region": settings.node_region}, ratio)
        self.usage: dict[str, tuple[float, float]] = {}  # sandbox id -> (cpu cores, memory MB)
        self._cpu_seen: dict[str, tuple[float, int]] = {}  # sandbox id -> (time, cpu usec)

    def refresh(self, pending: Resources = ZERO) -> Node:
        """Allocation from the runtime's records (plus reservations not yet created)."""
        alloc = pending
        local = set()
        for rec in self.runtime.list():
            local.add(rec.id)
            if rec.state in ACTIVE:
                alloc = alloc + request_of(rec.spec.limits)
            elif rec.state in ("stopped", "hibernated"):
                alloc = alloc + Resources(0, 0, rec.spec.limits.disk_mb)  # its disk stays here
        node = self.node
        node.allocated = alloc
        node.local = local
        pool = self.runtime.pool
        node.pools = {pool.template: len(pool.ready)}
        node.heartbeat_at = time.time()
        return node

    def sample_usage(self) -> None:
        """Read every live sandbox's cgroup (blocking: run it in a thread)."""
        now = time.monotonic()
        usage: dict[str, tuple[float, float]] = {}
        cpu_total = mem_total = 0.0
        for rec in self.runtime.all_records():
            if rec.state not in ACTIVE:
                continue
            try:
                u = self.runtime.usage(rec.id) if not rec.pooled else cgroups.manager(
                    f"{self.runtime.cgroup_parent}/{rec.id}").usage()  # fmt: skip
            except Exception:
                continue
            prev = self._cpu_seen.get(rec.id)
            cores = (u.cpu_usec - prev[1]) / 1e6 / (now - prev[0]) if prev and now > prev[0] else 0.0
            self._cpu_seen[rec.id] = (now, u.cpu_usec)
            # what the kernel cannot reclaim (no swap): page cache would come back under pressure
            mem = anon_memory_mb(f"{self.runtime.cgroup_parent}/{rec.id}")
            usage[rec.id] = (max(0.0, cores), mem)
            cpu_total += max(0.0, cores)
            mem_total += mem
        for gone in set(self._cpu_seen) - set(usage):
            del self._cpu_seen[gone]
        self.usage = usage
        self.node.usage = Resources(cpu_total, mem_total)


@dataclass(eq=False)
class _Waiter:
    ask: Ask
    future: asyncio.Future[Placement]
    since: float
    token: str
    victims: list[str] = field(default_factory=list)
    last_reason: str = ""


class Admitted:
    """What `admit` yields: the placement, to be bound to the sandbox once created."""

    def __init__(self, scheduler: LocalScheduler | None, placement: Placement | None) -> None:
        self.scheduler = scheduler
        self.placement = placement

    def bind(self, sandbox_id: str) -> None:
        if self.scheduler is not None and self.placement is not None:
            self.scheduler.placements[sandbox_id] = self.placement.explain()


@asynccontextmanager
async def unscheduled() -> AsyncIterator[Admitted]:
    """For a SandboxService without a scheduler (tests that build one by hand)."""
    yield Admitted(None, None)


class LocalScheduler:
    def __init__(self, runtime: NodeRuntime, store: Store, settings: Settings) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.view = NodeView(runtime, settings)
        self.cluster = Cluster([self.view.node])
        matrix = LatencyMatrix.parse(settings.latency_matrix) if settings.latency_matrix else None
        self.scheduler = policies.build("cloche", self.cluster, matrix=matrix,
                                        weights=policies.parse_weights(settings.scheduler_weights),
                                        high_water=settings.usage_high_water)  # fmt: skip
        self.queue: FairQueue[_Waiter] = FairQueue()
        self.pending: dict[str, tuple[str, Resources]] = {}  # placed, not yet created: token -> (tenant, request)
        self.in_flight: dict[str, tuple[str, Resources]] = {}  # admitting (queued or placed), for quotas
        self.placements: dict[str, dict[str, Any]] = {}
        budget = settings.pool_budget_mb or 0.05 * self.view.node.capacity.memory_mb
        self.pool_sizer = PoolSizer(budget, floor={settings.pool_template: settings.pool_size}, default_refill_s=0.3)
        self._pool_claims = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._departures = 0.0  # EWMA of sandboxes leaving per second (for Retry-After)
        self._last_departure = time.monotonic()
        self._busy: set[str] = set()  # sandboxes being hibernated by us
        runtime.listeners.append(self)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.view.sample_usage)
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for item, _, _ in list(self.queue.order()):
            self.queue.remove(item)
            if not item.future.done():
                item.future.cancel()

    async def sandbox_started(self, record: SandboxRecord, host_dir: Path) -> None:
        self._kick.set()

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        now = time.monotonic()
        dt = max(1e-3, now - self._last_departure)
        self._departures = 0.8 * self._departures + 0.2 * (1.0 / dt)
        self._last_departure = now
        self._kick.set()

    # ---- admission -------------------------------------------------------------------------

    def _pending_total(self) -> Resources:
        total = ZERO
        for _, res in self.pending.values():
            total = total + res
        return total

    def _refresh(self) -> Node:
        return self.view.refresh(self._pending_total())

    def _priority(self, tenant_id: str, cache: dict[str, int]) -> int:
        if tenant_id not in cache:
            t = self.store.tenant(tenant_id)
            cache[tenant_id] = t.priority if t else 0
        return cache[tenant_id]

    def _check_quota(self, tenant: Tenant, res: Resources, token: str) -> None:
        """The tenant's quota with its reservations in flight counted, so concurrent
        creates cannot together pass it."""
        ledger = QuotaLedger()
        for row in self.store.sandboxes(tenant.id):
            try:
                rec = self.runtime.get(row.id)
            except Exception:
                continue
            ledger.activate(tenant.id, request_of(rec.spec.limits) if rec.state in ACTIVE else ZERO, new=True)
        for other, (tid, r) in self.in_flight.items():
            if tid == tenant.id and other != token:
                ledger.activate(tid, r, new=True)
        reason = ledger.check(tenant.id, Quota(tenant.max_sandboxes, tenant.max_cpu, tenant.max_memory_mb), res)
        if reason is not None:
            raise ApiError(429, "quota_exceeded", reason)

    @asynccontextmanager
    async def admit(self, tenant: Tenant, spec: SandboxSpec, wait_s: float | None = None,
                    region: str | None = None) -> AsyncIterator[Admitted]:  # fmt: skip
        """Wait (fairly, up to wait_s) until the node has room for `spec`, reserve it for
        the duration of the block, and say why the node was chosen."""
        res = request_of(spec.limits)
        ask = Ask(res, spec.template, tenant.id, getattr(tenant, "priority", 0), region)
        node = self.view.node
        if not Resources(res.cpu, res.memory_mb, res.disk_mb if res.disk_mb < INF else 0).fits_in(node.allocatable):
            raise ApiError(409, "insufficient_capacity",
                           f"no node can ever hold {res.cpu:g} cpu / {res.memory_mb:g} MB: the largest allocatable is "
                           f"{node.allocatable.cpu:g} cpu / {node.allocatable.memory_mb:g} MB")  # fmt: skip
        token = "rsv_" + secrets.token_hex(6)
        self._check_quota(tenant, res, token)
        self.in_flight[token] = (tenant.id, res)  # counts for the quota of concurrent creates at once
        loop = asyncio.get_running_loop()
        waiter = _Waiter(ask, loop.create_future(), time.monotonic(), token)
        self.queue.push(waiter, tenant.id, ask.priority)
        wait = self.settings.create_wait_s if wait_s is None else wait_s
        try:
            self._dispatch()
            if not waiter.future.done():
                self._kick.set()
                try:
                    await asyncio.wait_for(asyncio.shield(waiter.future), timeout=max(wait, 0.001))
                except TimeoutError:
                    if self.queue.remove(waiter):
                        raise self._no_room(waiter, wait) from None
            placement = waiter.future.result()
            yield Admitted(self, placement)
        finally:
            self.queue.remove(waiter)
            self.pending.pop(token, None)
            self.in_flight.pop(token, None)
            self._kick.set()

    def _no_room(self, waiter: _Waiter, waited: float) -> ApiError:
        rate = self._departures if time.monotonic() - self._last_departure < 300 else 0.0
        ahead = len(self.queue) + 1
        retry = min(60, max(1, math.ceil(ahead / rate))) if rate > 0 else 5
        why = waiter.last_reason or "no room"
        return ApiError(503, "no_capacity",
                        f"no room for this sandbox after waiting {waited:g} s ({why}); nothing idle enough to "
                        f"hibernate", headers={"Retry-After": str(retry)})  # fmt: skip

    def _dispatch(self) -> None:
        """Admit queued creates, in fair order, while they fit."""
        if not len(self.queue):
            return
        self._refresh()
        now = time.monotonic()

        def try_admit(w: _Waiter) -> bool:
            if w.future.done():
                return False
            p = self.scheduler.place(w.ask)
            if p.node is None:
                w.last_reason = p.reason()
                return False
            self.pending[w.token] = (w.ask.tenant, w.ask.resources)
            self._refresh()
            p.waited_s = now - w.since
            p.victims = list(w.victims)
            w.future.set_result(p)
            return True

        dispatch(self.queue, try_admit)

    # ---- preemption and the node's health ---------------------------------------------------

    def _victims(self, exclude: frozenset[str] = frozenset()) -> list[Victim]:
        """Running or paused sandboxes that are idle: no API activity for preempt_idle_s
        and hardly any cpu use."""
        cache: dict[str, int] = {}
        owners = {row.id: row.tenant_id for row in self.store.sandboxes()}
        out = []
        for rec in self.runtime.list():
            if rec.state not in ACTIVE or rec.id in exclude or rec.id in self._busy or rec.id not in owners:
                continue
            cores, mem = self.view.usage.get(rec.id, (0.0, 0.0))
            if cores > BUSY_CPU:
                continue
            out.append(Victim(rec.id, self.view.node.id, request_of(replace(rec.spec.limits, disk_mb=0)),
                              self._priority(owners[rec.id], cache), rec.last_active_at, mem))  # fmt: skip
        return out

    async def _hibernate(self, victims: list[Victim], why: str) -> list[str]:
        done = []
        for v in victims:
            self._busy.add(v.key)
            try:
                log.info("hibernating idle sandbox %s (%s)", v.key, why)
                await self.runtime.hibernate(v.key)
                done.append(v.key)
            except Exception:
                log.exception("could not hibernate %s", v.key)
            finally:
                self._busy.discard(v.key)
        return done

    async def _preempt(self) -> None:
        """Make room for the first waiter that does not fit."""
        head = next((w for w, _, _ in self.queue.order() if not w.future.done()), None)
        if head is None:
            return
        self._refresh()
        now = time.time()
        p = plan(self.scheduler, head.ask, {self.view.node.id: self._victims()}, now, self.settings.preempt_idle_s)
        if p is None:
            return
        head.victims.extend(await self._hibernate(p.victims, f"room for a create of tenant {head.ask.tenant}"))
        self._dispatch()

    async def _guard(self) -> None:
        """Wakes and forks bypass the queue; if they overfill the node (by request, or by
        live memory above the high-water mark), hibernate idle sandboxes, lowest
        priority and least recently used first."""
        node = self._refresh()
        over_alloc = Resources(max(0.0, node.allocated.cpu - node.allocatable.cpu),
                               max(0.0, node.allocated.memory_mb - node.allocatable.memory_mb))  # fmt: skip
        over_mb = node.usage.memory_mb - node.capacity.memory_mb * self.settings.usage_high_water
        if over_alloc == ZERO and over_mb <= 0:
            return
        victims = reclaim(node, self._victims(), time.time(), self.settings.preempt_idle_s, max(0.0, over_mb),
                          over_alloc)  # fmt: skip
        if victims:
            await self._hibernate(victims, "the node is over its allocatable or memory high-water mark")

    # ---- warm pool ------------------------------------------------------------------------------

    def _autosize(self) -> None:
        if not self.settings.pool_autosize:
            return
        pool = self.runtime.pool
        claims = pool.claims - self._pool_claims
        self._pool_claims = pool.claims
        if claims:
            self.pool_sizer.claimed(pool.template, claims)
        pooled = [self.view.usage[r.id][1] for r in self.runtime.all_records() if r.pooled and r.id in self.view.usage]
        if pooled:
            self.pool_sizer.sandbox_mb = max(16.0, sum(pooled) / len(pooled))
        target = self.pool_sizer.tick(time.monotonic()).get(pool.template, pool.size)
        if target != pool.size:
            log.info("warm pool %s: %d -> %d", pool.template, pool.size, target)
            pool.set_size(target)

    async def _loop(self) -> None:
        last_sample = last_pool = 0.0
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=0.25 if len(self.queue) else 1.0)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                now = time.monotonic()
                if now - last_sample >= 1.0:
                    await asyncio.to_thread(self.view.sample_usage)
                    last_sample = now
                self._dispatch()
                if len(self.queue):
                    await self._preempt()
                else:
                    await self._guard()
                if now - last_pool >= 5.0:
                    self._autosize()
                    last_pool = now
                live = {r.id for r in self.runtime.list()}
                for gone in [k for k in self.placements if k not in live]:
                    del self.placements[gone]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler loop")
                await asyncio.sleep(0.5)

    # ---- resize and visibility -----------------------------------------------------------------

    async def resize(self, tenant: Tenant, sandbox_id: str, cpu: float | None, memory_mb: int | None,
                     pids: int | None, allow_move: bool = False) -> SandboxRecord:  # fmt: skip
        rec = self.runtime.get(sandbox_id)
        old = rec.spec.limits
        new = replace(old, cpu=old.cpu if cpu is None else cpu,
                      memory_mb=old.memory_mb if memory_mb is None else memory_mb,
                      pids=old.pids if pids is None else pids)  # fmt: skip
        new.validate()
        if new == old:
            return rec
        if rec.state in ACTIVE:
            self._check_resize_quota(tenant, sandbox_id, old, new)
            node = self._refresh()
            what_if = replace(node, allocated=node.allocated - request_of(old))
            ask = Ask(Resources(new.cpu, new.memory_mb), rec.spec.template, tenant.id, tenant.priority)
            reason = ResourceFit().check(what_if, ask)
            if reason is not None:
                a = node.allocatable
                message = (f"node {node.id} has no room to grow this sandbox to {new.cpu:g} cpu / {new.memory_mb} MB "
                           f"({reason}: {node.allocated.cpu:g}/{a.cpu:g} cpu and {node.allocated.memory_mb:g}/"
                           f"{a.memory_mb:g} MB allocated)")  # fmt: skip
                if allow_move:
                    elsewhere = self.scheduler.place(replace(ask, exclude=frozenset({node.id})))
                    if elsewhere.node is None:
                        message += f"; allow_move: no other node fits (this control plane has {len(self.cluster)})"
                raise ApiError(409, "insufficient_capacity", message)
            if new.memory_mb < old.memory_mb:
                used = await asyncio.to_thread(anon_memory_mb, f"{self.runtime.cgroup_parent}/{sandbox_id}")
                if used > new.memory_mb * 0.95:
                    raise ApiError(409, "in_use",
                                   f"the sandbox uses {used:.0f} MB that cannot be reclaimed; a limit of "
                                   f"{new.memory_mb} MB would force the kernel to kill its processes")  # fmt: skip
        rec = await self.runtime.resize(sandbox_id, new)
        self.store.update_limits(sandbox_id, new.cpu, new.memory_mb)
        self._kick.set()
        return rec

    def _check_resize_quota(self, tenant: Tenant, sandbox_id: str, old: Limits, new: Limits) -> None:
        cpu = mem = 0.0
        for row in self.store.sandboxes(tenant.id):
            try:
                rec = self.runtime.get(row.id)
            except Exception:
                continue
            if rec.state in ACTIVE and row.id != sandbox_id:
                cpu += rec.spec.limits.cpu
                mem += rec.spec.limits.memory_mb
        for tid, r in self.in_flight.values():
            if tid == tenant.id:
                cpu += r.cpu
                mem += r.memory_mb
        if cpu + new.cpu > tenant.max_cpu + 1e-9:
            raise ApiError(429, "quota_exceeded", f"quota max_cpu={tenant.max_cpu:g} would be exceeded "
                                                  f"({cpu + new.cpu:g} cpus in total)")  # fmt: skip
        if mem + new.memory_mb > tenant.max_memory_mb:
            raise ApiError(429, "quota_exceeded", f"quota max_memory_mb={tenant.max_memory_mb} would be exceeded "
                                                  f"({mem + new.memory_mb:g} MB in total)")  # fmt: skip

    def explain(self, sandbox_id: str) -> dict[str, Any]:
        found = self.placements.get(sandbox_id)
        if found is not None:
            return found
        return {"node": self.view.node.id, "policy": "cloche",
                "reason": "not recorded: the sandbox was made by a fork or before the server last started "
                          f"(embedded mode has one node, {self.view.node.id})"}  # fmt: skip

    def nodes(self) -> list[dict[str, Any]]:
        node = self._refresh()
        pool = self.runtime.pool
        stats = self.pool_sizer.stats.get(pool.template)
        out = node.to_json()
        active = [r for r in self.runtime.list() if r.state in ACTIVE]
        out.update({
            "state": "draining" if node.draining else "ready",
            # capacity and allocated keep their first shape (cpu, memory_mb) for older clients
            "capacity": {**out["capacity"], "cpu": node.capacity.cpu, "memory_mb": int(node.capacity.memory_mb)},
            "allocated": {"cpu": round(sum(r.spec.limits.cpu for r in active), 4),
                          "memory_mb": sum(r.spec.limits.memory_mb for r in active),
                          "disk_mb": node.allocated.disk_mb - self._pending_total().disk_mb},
            "reserved": self._pending_total().to_json(),
            "usage": {**node.usage.to_json(), "memory_high_water_mb": round(
                node.capacity.memory_mb * self.settings.usage_high_water)},
            "sandboxes": len(self.runtime.list()),
            "states": {s: sum(1 for r in self.runtime.list() if r.state == s)
                       for s in ("running", "paused", "stopped", "hibernated")},
            "pools": [{"template": pool.template, "ready": len(pool.ready), "size": pool.size,
                       "autosize": bool(self.settings.pool_autosize), "claims": pool.claims,
                       "claim_rate_per_s": round(stats.rate, 4) if stats else 0.0,
                       "budget_mb": self.pool_sizer.budget_mb}],
            "queue": {"waiting": len(self.queue),
                      "by_priority": _count_by_priority(self.queue)},
        })  # fmt: skip
        return [out]


def _count_by_priority(queue: FairQueue[_Waiter]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, priority in queue.order():
        out[str(priority)] = out.get(str(priority), 0) + 1
    return out
