"""Named snapshots: a tenant's saved copies of a sandbox's files, usable to create
new sandboxes. They pin their manifests against garbage collection."""

from __future__ import annotations

import secrets
import time

from cloche.control.errors import ApiError, not_found
from cloche.control.sandboxes import SandboxService
from cloche.store.db import IntegrityError, SnapshotRow, Tenant


class SnapshotService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self.store = sandboxes.store
        self.node = sandboxes.node

    async def create(self, tenant: Tenant, sandbox_id: str, name: str) -> SnapshotRow:
        view = self.sandboxes.get(tenant, sandbox_id)
        if self.store.snapshot_by_name(tenant.id, name):
            raise ApiError(409, "conflict", f"a snapshot named {name!r} already exists")
        manifest = await self.node.snapshot(sandbox_id)
        size = self.node.snapshot_bytes(manifest)
        row = SnapshotRow("snap_" + secrets.token_hex(8), tenant.id, name, manifest, sandbox_id,
                          view.record.spec.template, size, time.time())  # fmt: skip
        try:
            self.store.add_snapshot(row)
        except IntegrityError:
            raise ApiError(409, "conflict", f"a snapshot named {name!r} already exists") from None
        return row

    def get(self, tenant: Tenant, snapshot_id: str) -> SnapshotRow:
        row = self.store.snapshot(snapshot_id)
        if row is None or row.tenant_id != tenant.id:
            raise not_found("snapshot", snapshot_id)
        return row

    def list(self, tenant: Tenant) -> list[SnapshotRow]:
        return self.store.snapshots(tenant.id)

    def delete(self, tenant: Tenant, snapshot_id: str) -> None:
        self.get(tenant, snapshot_id)
        self.store.delete_snapshot(snapshot_id)
