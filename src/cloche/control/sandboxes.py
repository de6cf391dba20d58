"""Sandbox service: the tenant-facing lifecycle on top of the node.

Control is the only caller of the node (`api.Node`): routes, the dashboard and E2B go
through this service. It owns what the node does not know about: which tenant a sandbox belongs to, its
name (idempotent create) and metadata, and per-tenant quotas. Another tenant's sandbox
is answered exactly like a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloche.control.create import CreateRequest
from cloche.control.errors import ApiError, not_found, scheduler_errors
from cloche.control.locks import KeyedLocks
from cloche.fleet import where
from cloche.node.api import Node, SandboxEvents
from cloche.node.net.policy import NetworkPolicy
from cloche.node.records import SandboxRecord
from cloche.node.spec import IdlePolicy, Limits, SandboxSpec
from cloche.scheduler.local import unscheduled
from cloche.scheduler.nodeview import request_of
from cloche.store.db import SandboxRow, Store, Tenant

if TYPE_CHECKING:
    from cloche.control.secrets import SecretService
    from cloche.scheduler.local import LocalScheduler


def embedded_location(sandbox_id: str, region: str = "local") -> dict[str, Any]:
    """Where a sandbox is on the embedded node: there, in the server's region, and it
    never lost its node."""
    return {"node": "local", "region": region, "home_region": region, "recovery": None}


OWNERS_CACHED = 100_000  # sandbox ids whose tenant is remembered (tens of bytes each)


@dataclass
class SandboxView:
    row: SandboxRow
    record: SandboxRecord
    where: dict[str, Any] = field(default_factory=lambda: embedded_location(""))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.row.id,
            "name": self.row.name,
            "state": self.record.state,
            "template": self.row.template,
            "cpu": self.record.spec.limits.cpu,
            "memory_mb": self.record.spec.limits.memory_mb,
            "disk_mb": self.record.spec.limits.disk_mb,
            "timeout_s": self.record.spec.timeout_s,
            "metadata": self.row.metadata,
            "created_at": self.row.created_at,
            "expires_at": self.record.expires_at,
            "last_active_at": self.record.last_active_at,
            "idle": {"pause_after_s": self.record.spec.idle.pause_after_s,
                     "hibernate_after_s": self.record.spec.idle.hibernate_after_s},
            "on_timeout": self.record.spec.idle.on_timeout,
            "on_resume": self.record.spec.on_resume,
            "node": self.where["node"],
            "recovery": self.where["recovery"],
            "region": self.where["region"],
            "home_region": self.where["home_region"],
            "regions": list(self.record.spec.regions),
            "isolation": self.record.spec.isolation,
            "network": {"policy": self.record.spec.network.public_json(),
                        "address": (self.record.net or {}).get("address")},
        }


class SandboxService:
    def __init__(self, store: Store, node: Node, defaults: Limits, network_default: str = "none") -> None:
        self.store = store
        self.node = node
        self.defaults = defaults
        self.network_default = network_default if node.networking else "none"
        self.locks = KeyedLocks()  # creates by name (and E2B's by Idempotency-Key)
        self.scheduler: LocalScheduler | None = None  # admission and placement (set by the app)
        self.secrets: SecretService | None = None  # checks the secrets a policy's rules name (set by the app)
        # sandbox id -> {"node", "recovery"} for its view (a cluster's fleet sets its own)
        self.locate: Callable[[str], dict[str, Any]] = embedded_location
        self.region: str | None = None  # the embedded node's region (None: a cluster's fleet places by region)
        # sandbox id -> its tenant's id, for the ownership check of every exec and file
        # call: a fact that never changes, so it is read from the records once. A deleted
        # sandbox left here is refused by the node (SandboxNotFound, the same 404).
        self._owners: dict[str, str] = {}
        node.on_expire(store.delete_sandbox)

    async def reconcile(self) -> None:
        """Make ownership records and the node agree after a restart."""
        owned = {row.id for row in self.store.sandboxes()}
        for rec in self.node.list():
            if rec.id not in owned:
                await self.node.kill(rec.id)
        live = {rec.id for rec in self.node.list()}
        for sid in owned - live:
            self.store.delete_sandbox(sid)

    def get(self, tenant: Tenant, sandbox_id: str) -> SandboxView:
        row = self.store.sandbox(sandbox_id)
        if row is None or row.tenant_id != tenant.id:
            raise not_found("sandbox", sandbox_id)
        try:
            return SandboxView(row, self.node.get(sandbox_id), self.locate(sandbox_id))
        except Exception:
            raise not_found("sandbox", sandbox_id) from None

    def list(self, tenant: Tenant, state: str | None = None,
             metadata: dict[str, str] | None = None) -> list[SandboxView]:  # fmt: skip
        views = []
        for row in self.store.sandboxes(tenant.id):
            try:
                view = SandboxView(row, self.node.get(row.id), self.locate(row.id))
            except Exception:
                continue
            if state and view.record.state != state:
                continue
            if metadata and any(row.metadata.get(k) != v for k, v in metadata.items()):
                continue
            views.append(view)
        return views

    async def create(self, tenant: Tenant, req: CreateRequest) -> tuple[SandboxView, bool]:
        """Create a sandbox (from a named snapshot if given), or return the tenant's
        existing one with this name. Returns (view, created)."""
        name, template = req.name, req.template
        async with self.locks.hold(f"name:{tenant.id}/{name}" if name else None):
            if name:
                existing = self.store.sandbox_by_name(tenant.id, name)
                if existing is not None:
                    return self.get(tenant, existing.id), False
            manifest = None
            if req.snapshot is not None:
                snap = self.store.snapshot(req.snapshot)
                if snap is None or snap.tenant_id != tenant.id:
                    raise not_found("snapshot", req.snapshot)
                manifest, template = snap.manifest, template or snap.template
            limits = Limits(
                cpu=req.cpu if req.cpu is not None else self.defaults.cpu,
                memory_mb=req.memory_mb if req.memory_mb is not None else self.defaults.memory_mb,
                disk_mb=req.disk_mb if req.disk_mb is not None else self.defaults.disk_mb,
                pids=self.defaults.pids,
            )
            spec = SandboxSpec(template=template or "base", limits=limits, env=req.env, timeout_s=req.timeout_s,
                               idle=IdlePolicy(**(req.idle or {}), on_timeout=req.on_timeout), on_resume=req.on_resume,
                               network=self.network_policy(req.network, tenant=tenant),
                               isolation=self.choose_isolation(tenant, req.isolation),
                               regions=tuple(req.regions))  # fmt: skip
            spec.validate()
            if self.region is not None and spec.regions and self.region not in spec.regions:
                raise ApiError(400, "unknown_region", f"this server's one node is in region {self.region!r}, "
                               f"not in {', '.join(spec.regions)}, where the sandbox's data must stay")  # fmt: skip
            # the scheduler admits (quotas, fair queue up to wait_s, preemption) and places
            near = req.region or where.user_region()  # the user's, for the latency-aware placement
            admission = self.scheduler.admit(tenant, spec, req.wait_s, near) if self.scheduler else unscheduled()
            with scheduler_errors(), where.near(near):
                async with admission as admitted:
                    rec = await self.node.create(spec, snapshot=manifest)
                    admitted.bind(rec.id)
            return await self._own(tenant, rec, name, req.metadata), True

    def choose_isolation(self, tenant: Tenant, isolation: str | None) -> str:
        """The tier a create asks for (the server's default when absent); 403 naming the
        field when the tenant's allow-list does not include it."""
        chosen = isolation or self.node.default_isolation
        if tenant.isolation and chosen not in tenant.isolation:
            raise ApiError(403, "isolation_not_allowed", f"isolation: this tenant may not use {chosen!r} "
                           f"(allowed: {', '.join(tenant.isolation)})")  # fmt: skip
        return chosen

    def network_policy(self, network: str | dict[str, Any] | None, field_name: str = "network", *,
                       tenant: Tenant | None = None) -> NetworkPolicy:  # fmt: skip
        """Parse a policy from the API (the server's default when absent); 400 naming the
        field. With `tenant`, the secrets its rules name must be the tenant's and allowed
        for the rules' hosts."""
        if network is None:
            network = self.network_default
        if network != "none" and not self.node.networking:
            raise ApiError(400, "invalid_request", f"{field_name}: networking is off on this server (network=0)")
        policy = NetworkPolicy.from_json(network, field_name=field_name)
        if tenant is not None and self.secrets is not None:
            self.secrets.check_policy(tenant.id, policy, field_name)
        return policy

    async def set_network(self, tenant: Tenant, sandbox_id: str, network: str | dict[str, Any]) -> SandboxView:
        self.get(tenant, sandbox_id)
        await self.node.set_network(sandbox_id, self.network_policy(network, tenant=tenant))
        return self.get(tenant, sandbox_id)

    def network_status(self, view: SandboxView) -> dict[str, Any]:
        """The sandbox's policy, address and live counters (traffic and DNS)."""
        out: dict[str, Any] = dict(view.to_json()["network"])
        counters = self.node.network_stats(view.row.id)
        if counters is not None:
            out["counters"] = counters
        return out

    async def _own(self, tenant: Tenant, rec: SandboxRecord, name: str | None,
                   metadata: dict[str, str]) -> SandboxView:  # fmt: skip
        limits = rec.spec.limits
        row = SandboxRow(rec.id, tenant.id, name, rec.spec.template, limits.cpu, limits.memory_mb,
                         limits.disk_mb, metadata, time.time())  # fmt: skip
        try:
            self.store.add_sandbox(row)
        except BaseException:
            await self.node.kill(rec.id)
            raise
        return SandboxView(row, rec, self.locate(rec.id))

    async def fork(self, tenant: Tenant, sandbox_id: str, name: str | None,
                   metadata: dict[str, str] | None) -> SandboxView:  # fmt: skip
        source = self.get(tenant, sandbox_id)
        if name and self.store.sandbox_by_name(tenant.id, name):
            raise ApiError(409, "conflict", f"a sandbox named {name!r} already exists")
        res = request_of(source.record.spec.limits)
        # the scheduler's one quota check, held until the fork is owned
        with scheduler_errors(), self.scheduler.reserve(tenant, res) if self.scheduler else nullcontext():
            rec = await self.node.fork(sandbox_id)
            return await self._own(tenant, rec, name, dict(source.row.metadata if metadata is None else metadata))

    async def kill(self, tenant: Tenant, sandbox_id: str) -> None:
        self.get(tenant, sandbox_id)
        self.store.delete_sandbox(sandbox_id)
        await self.node.kill(sandbox_id)

    async def woken(self, tenant: Tenant, sandbox_id: str) -> None:
        """Wake the tenant's sandbox if it was paused, stopped or hibernated (waking is
        transparent) and mark it active; for callers that go on to use it, not show it."""
        self._check_owner(tenant, sandbox_id)
        await self.node.wake(sandbox_id)
        self.node.touch(sandbox_id)

    def _check_owner(self, tenant: Tenant, sandbox_id: str) -> None:
        """404 unless the sandbox is the tenant's; the records are asked once per sandbox
        (in a cluster, a PostgreSQL round trip that was most of a replica's exec time)."""
        owner = self._owners.get(sandbox_id)
        if owner is None:
            self.get(tenant, sandbox_id)
            if len(self._owners) >= OWNERS_CACHED:
                del self._owners[next(iter(self._owners))]  # the oldest entry
            self._owners[sandbox_id] = tenant.id
        elif owner != tenant.id:
            raise not_found("sandbox", sandbox_id)

    async def running(self, tenant: Tenant, sandbox_id: str) -> SandboxView:
        """The sandbox, woken if it was paused, stopped or hibernated."""
        await self.woken(tenant, sandbox_id)
        return self.get(tenant, sandbox_id)

    async def pause(self, tenant: Tenant, sandbox_id: str) -> SandboxView:
        self.get(tenant, sandbox_id)
        await self.node.pause(sandbox_id)
        return self.get(tenant, sandbox_id)

    async def hibernate(self, tenant: Tenant, sandbox_id: str, keep_local: bool = True) -> SandboxView:
        self.get(tenant, sandbox_id)
        await self.node.hibernate(sandbox_id, keep_local=keep_local)
        return self.get(tenant, sandbox_id)

    async def set_timeout(self, tenant: Tenant, sandbox_id: str, timeout_s: float | None) -> SandboxView:
        """Kill the sandbox `timeout_s` from now (never with None)."""
        self.get(tenant, sandbox_id)
        await self.node.set_timeout(sandbox_id, timeout_s)
        return self.get(tenant, sandbox_id)

    def subscribe(self, listener: SandboxEvents) -> None:
        """`listener` is told when a sandbox starts serving and when it stops."""
        self.node.subscribe(listener)

    def touch(self, tenant: Tenant, sandbox_id: str) -> None:
        """Record activity now (postpones the idle policy)."""
        self.get(tenant, sandbox_id)
        self.node.touch(sandbox_id)
