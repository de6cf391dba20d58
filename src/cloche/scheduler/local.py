"""The scheduler in the server: the async glue between the decision loop
(`cloche.scheduler.loop`, which the simulator drives too) and the embedded node.

`NodeView` adapts the NodeRuntime to the scheduler's Node model (capacity from the
settings or the host, allocation from the sandboxes' requests, live usage from their
cgroups). `LocalScheduler` is what SandboxService calls: `admit` is an async context
manager around a create. Every create goes through the loop's fair queue and waits
(on a future) until the loop places it, hibernating least-recently-used idle sandboxes
of lower or equal priority to make room, or until the create's `wait_s` is over (then
`NoCapacity` with a Retry-After). A background task ticks the loop: it keeps the node
healthy when wakes (which do not queue: a user is waiting on them) push it over its
allocatable or usage high-water mark, and resizes the warm pool from its claim rate.
LocalScheduler is the loop's `Effects`: it starts nothing itself (a placed create
returns to its caller) and hibernates through the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cloche.node.spec import SandboxSpec
from cloche.scheduler import policies
from cloche.scheduler.admission import Quota, QuotaLedger, TenantUsage, over_quota
from cloche.scheduler.cluster import Cluster
from cloche.scheduler.errors import InsufficientCapacity, InUse, NoCapacity, QuotaExceeded
from cloche.scheduler.filters import ResourceFit
from cloche.scheduler.loop import AdmissionLoop, LoopConfig, Waiter
from cloche.scheduler.model import ZERO, Ask, Node, Resources
from cloche.scheduler.nodeview import ACTIVE, NodeView, request_of
from cloche.scheduler.pipeline import Placement
from cloche.scheduler.pools import PoolSizer
from cloche.scheduler.preemption import Victim
from cloche.scheduler.scorers.latency import LatencyMatrix

if TYPE_CHECKING:
    from cloche.config import Settings
    from cloche.node.api import Node as NodeApi
    from cloche.node.records import SandboxRecord
    from cloche.store.db import Store, Tenant

# A sandbox still being made holds its quota too, or two racing creates would both pass.
QUOTA_ACTIVE = (*ACTIVE, "creating")

log = logging.getLogger("cloche.scheduler")
BUSY_CPU = 0.05  # cores: a sandbox using more than this is not idle, whatever its last API call


@dataclass(eq=False, slots=True, kw_only=True)
class _Waiter(Waiter):
    future: asyncio.Future[Placement]  # the placement, for the create waiting in admit


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
    def __init__(self, runtime: NodeApi, store: Store, settings: Settings) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.view = NodeView(runtime, settings)
        self.cluster = Cluster([self.view.node])
        matrix = LatencyMatrix.parse(settings.latency_matrix) if settings.latency_matrix else None
        self.scheduler = policies.build("cloche", self.cluster, matrix=matrix,
                                        weights=policies.parse_weights(settings.scheduler_weights),
                                        high_water=settings.usage_high_water)  # fmt: skip
        self.placements: dict[str, dict[str, Any]] = {}
        budget = settings.pool_budget_mb or 0.05 * self.view.node.capacity.memory_mb
        self.pool_sizer = PoolSizer(budget, floor={settings.pool_template: settings.pool_size}, default_refill_s=0.3)
        config = LoopConfig(idle_s=settings.preempt_idle_s, high_water=settings.usage_high_water, retry_s=0.25,
                            pool_every_s=5.0)  # fmt: skip
        sizers = {self.view.node.id: self.pool_sizer} if settings.pool_autosize else {}
        # wall time: victims' last activity is wall time
        self.loop: AdmissionLoop[_Waiter] = AdmissionLoop(self.scheduler, self, time.time, config, sizers)
        self._pool_claims = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hibernations: set[asyncio.Task[None]] = set()
        self._departures = 0.0  # EWMA of sandboxes leaving per second (for Retry-After)
        self._last_departure = time.monotonic()
        self._busy: set[str] = set()  # sandboxes being hibernated by us
        runtime.subscribe(self)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.view.sample_usage)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        for task in [self._task, *self._hibernations]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for item, _, _ in list(self.loop.queue.order()):
            self.loop.give_up(item)
            if not item.future.done():
                item.future.cancel()

    async def sandbox_started(self, record: SandboxRecord) -> None:
        self._kick.set()

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        now = time.monotonic()
        dt = max(1e-3, now - self._last_departure)
        self._departures = 0.8 * self._departures + 0.2 * (1.0 / dt)
        self._last_departure = now
        self._kick.set()

    # ---- admission -------------------------------------------------------------------------

    def _pending_total(self) -> Resources:
        """Placed creates not yet made: the loop's reservations on the node."""
        total = ZERO
        for _, res in self.cluster.placed.values():
            total = total + res
        return total

    def _refresh(self) -> Node:
        """The node as the runtime has it now; the loop is told that anything may fit."""
        node = self.view.refresh(self._pending_total())
        self.loop.changed()
        self.loop.freed(node)
        return node

    def _priority(self, tenant_id: str, cache: dict[str, int]) -> int:
        if tenant_id not in cache:
            t = self.store.tenant(tenant_id)
            cache[tenant_id] = t.priority if t else 0
        return cache[tenant_id]

    def quota_usage(self, tenant: str, resizing: str | None = None) -> TenantUsage:
        """What the tenant's sandboxes hold (the loop adds its creates in flight): each
        counts for max_sandboxes, and the requests of the active ones, running, paused
        or still creating (two racing creates must not both pass), count for cpu and
        memory; but `resizing`'s, whose new size is what is asked."""
        ledger = QuotaLedger()
        for row in self.store.sandboxes(tenant):
            try:
                rec = self.runtime.get(row.id)
            except Exception:
                continue
            held = rec.state in QUOTA_ACTIVE and row.id != resizing
            ledger.activate(tenant, request_of(rec.spec.limits) if held else ZERO, new=True)
        return ledger.of(tenant)

    def check_quota(self, tenant: Tenant, res: Resources, new: bool = True, resizing: str | None = None) -> None:
        """The one quota check (the loop's for creates and wakes, this for forks and
        resizes): `res` more on top of what the tenant holds and has in flight."""
        usage = self.quota_usage(tenant.id, resizing) + self.loop.reserved.of(tenant.id)
        reason = over_quota(usage, Quota(tenant.max_sandboxes, tenant.max_cpu, tenant.max_memory_mb), res, new)
        if reason is not None:
            raise QuotaExceeded(reason)

    @contextmanager
    def reserve(self, tenant: Tenant, res: Resources) -> Iterator[None]:
        """Hold a new sandbox's `res` against the tenant's quota for the block (a fork,
        which is placed where its source is), as the loop holds a create's."""
        self.check_quota(tenant, res)
        self.loop.reserved.activate(tenant.id, res, True)
        try:
            yield
        finally:
            self.loop.reserved.remove(tenant.id, res, True)

    @asynccontextmanager
    async def admit(self, tenant: Tenant, spec: SandboxSpec, wait_s: float | None = None,
                    region: str | None = None) -> AsyncIterator[Admitted]:  # fmt: skip
        """Wait (fairly, up to wait_s) until the node has room for `spec`, reserve it for
        the duration of the block, and say why the node was chosen."""
        res = request_of(spec.limits)
        ask = Ask(res, spec.template, tenant.id, getattr(tenant, "priority", 0), region)
        future: asyncio.Future[Placement] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(ask, "rsv_" + secrets.token_hex(6), self.loop.clock(), future=future)
        wait = self.settings.create_wait_s if wait_s is None else wait_s
        self._refresh()
        # raises InsufficientCapacity or QuotaExceeded; else queued (counting for the quota of concurrent creates)
        self.loop.submit(waiter, Quota(tenant.max_sandboxes, tenant.max_cpu, tenant.max_memory_mb))
        try:
            if not future.done():
                self._kick.set()
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout=max(wait, 0.001))
                except TimeoutError:
                    if self.loop.give_up(waiter):
                        raise self._no_room(waiter, wait) from None
            yield Admitted(self, future.result())
        finally:
            self.loop.give_up(waiter)
            self.loop.finish(waiter)
            self.cluster.release(waiter.key)
            self._kick.set()

    def _no_room(self, waiter: _Waiter, waited: float) -> NoCapacity:
        rate = self._departures if time.monotonic() - self._last_departure < 300 else 0.0
        ahead = len(self.loop.queue) + 1
        retry = min(60, max(1, math.ceil(ahead / rate))) if rate > 0 else 5
        return NoCapacity(f"no room for this sandbox after waiting {waited:g} s ({waiter.reason()}); nothing idle "
                          f"enough to hibernate", retry_after_s=retry)  # fmt: skip

    def placed(self, waiter: _Waiter, placement: Placement) -> None:
        """The loop placed a create: hand the placement to the admit waiting on it."""
        if not waiter.future.done():
            waiter.future.set_result(placement)

    # ---- preemption and the node's health ---------------------------------------------------

    def victims(self, max_priority: float, node_ids: Iterable[str] | None = None) -> dict[str, list[Victim]]:
        """Running or paused sandboxes that are idle: no API activity for preempt_idle_s
        and hardly any cpu use."""
        cache: dict[str, int] = {}
        owners = {row.id: row.tenant_id for row in self.store.sandboxes()}
        out = []
        for rec in self.runtime.list():
            if rec.state not in ACTIVE or rec.id in self._busy or rec.id not in owners:
                continue
            cores, mem = self.view.usage.get(rec.id, (0.0, 0.0))
            priority = self._priority(owners[rec.id], cache)
            if cores > BUSY_CPU or priority > max_priority:
                continue
            out.append(Victim(rec.id, self.view.node.id, request_of(replace(rec.spec.limits, disk_mb=0)), priority,
                              rec.last_active_at, mem))  # fmt: skip
        return {self.view.node.id: out}

    def hibernate(self, victims: list[Victim], waiter: _Waiter | None) -> None:
        why = f"room for a create of tenant {waiter.ask.tenant}" if waiter is not None else (
            "the node is over its allocatable or memory high-water mark")  # fmt: skip
        self._busy.update(v.key for v in victims)
        task = asyncio.get_running_loop().create_task(self._hibernate(victims, why, waiter))
        self._hibernations.add(task)
        task.add_done_callback(self._hibernations.discard)

    async def _hibernate(self, victims: list[Victim], why: str, waiter: _Waiter | None) -> None:
        done = []
        for v in victims:
            try:
                log.info("hibernating idle sandbox %s (%s)", v.key, why)
                await self.runtime.hibernate(v.key)
                done.append(v.key)
            except Exception:
                log.exception("could not hibernate %s", v.key)
            finally:
                self._busy.discard(v.key)
        if waiter is not None:
            self._refresh()
            self.loop.preempted(waiter, done)

    # ---- warm pool ------------------------------------------------------------------------------

    def _count_claims(self) -> None:
        """Feed the pool sizer the claims since the last look and the pooled sandboxes' size."""
        if not self.settings.pool_autosize:
            return
        pool = self.runtime.pool_status()
        claims = pool.claims - self._pool_claims
        self._pool_claims = pool.claims
        if claims:
            self.pool_sizer.claimed(pool.template, claims)
        pooled = [self.view.usage[r.id][1] for r in self.runtime.all_records() if r.pooled and r.id in self.view.usage]
        if pooled:
            self.pool_sizer.sandbox_mb = max(16.0, sum(pooled) / len(pooled))

    def pool_targets(self, node: Node, targets: dict[str, int]) -> None:
        pool = self.runtime.pool_status()
        target = targets.get(pool.template, pool.size)
        if target != pool.size:
            log.info("warm pool %s: %d -> %d", pool.template, pool.size, target)
            self.runtime.set_pool_size(target)

    async def _run(self) -> None:
        last_sample = 0.0
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=0.25 if len(self.loop.queue) else 1.0)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                if self._hibernations:  # the node's next look includes what they freed
                    await asyncio.gather(*self._hibernations, return_exceptions=True)
                now = time.monotonic()
                if now - last_sample >= 1.0:
                    await asyncio.to_thread(self.view.sample_usage)
                    last_sample = now
                self._refresh()
                self._count_claims()
                self.loop.tick()
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
            self.check_quota(tenant, request_of(new), new=False, resizing=sandbox_id)
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
                raise InsufficientCapacity(message)
            if new.memory_mb < old.memory_mb:
                usage = await asyncio.to_thread(self.runtime.usage, sandbox_id)
                used = usage.anon_memory_bytes / 2**20
                if used > new.memory_mb * 0.95:
                    raise InUse(
                        f"the sandbox uses {used:.0f} MB that cannot be reclaimed; a limit of "
                        f"{new.memory_mb} MB would force the kernel to kill its processes"
                    )
        rec = await self.runtime.resize(sandbox_id, new)
        self.store.update_limits(sandbox_id, new.cpu, new.memory_mb)
        self._kick.set()
        return rec

    def explain(self, sandbox_id: str) -> dict[str, Any]:
        found = self.placements.get(sandbox_id)
        if found is not None:
            return found
        return {"node": self.view.node.id, "policy": "cloche",
                "reason": "not recorded: the sandbox was made by a fork or before the server last started "
                          f"(embedded mode has one node, {self.view.node.id})"}  # fmt: skip

    def nodes(self) -> list[dict[str, Any]]:
        node = self._refresh()
        pool = self.runtime.pool_status()
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
            "pools": [{"template": pool.template, "ready": pool.ready, "size": pool.size,
                       "autosize": bool(self.settings.pool_autosize), "claims": pool.claims,
                       "claim_rate_per_s": round(stats.rate, 4) if stats else 0.0,
                       "budget_mb": self.pool_sizer.budget_mb}],
            "queue": {"waiting": len(self.loop.queue), "by_priority": self.loop.waiting_by_priority()},
        })  # fmt: skip
        return [out]
