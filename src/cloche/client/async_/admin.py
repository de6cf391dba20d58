"""The async face of the tenant-wide resources: tenants, templates, nodes, snapshots
and secrets.

It mirrors :mod:`cloche.client.sync.admin` method for method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, TypeVar

from .. import _api
from .._base import ProgressCallback
from ..models import (
    ApiKey,
    NewTenant,
    NodeInfo,
    SecretInfo,
    SecretKeyRotation,
    SnapshotInfo,
    TemplateInfo,
    Tenant,
)
from ._sender import AsyncSender

T = TypeVar("T")


class AsyncTenants:
    """``client.tenants``: tenant and API-key administration (admin key required)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def create(
        self,
        name: str,
        max_sandboxes: int | None = None,
        max_cpu: float | None = None,
        max_memory_mb: int | None = None,
    ) -> NewTenant:
        """Create a tenant with optional quotas; the result holds its first API key."""
        return await self._client._call(
            _api.create_tenant(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
        )

    async def list(self) -> list[Tenant]:
        """List every tenant."""
        return await self._client._call(_api.list_tenants())

    async def create_key(self, tenant_id: str) -> ApiKey:
        """Issue an additional API key for the tenant."""
        return await self._client._call(_api.create_key(tenant_id))

    async def revoke_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of the tenant's API keys."""
        await self._client._call(_api.revoke_key(tenant_id, key_id))


class AsyncTemplates:
    """``client.templates``: the root filesystems sandboxes are built on."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def list(self) -> list[TemplateInfo]:
        """Every template (``base`` included)."""
        return await self._client._call(_api.list_templates())

    async def import_tar(self, name: str, archive: bytes | IO[bytes], on_base: bool = False,
                         on_progress: ProgressCallback | None = None) -> TemplateInfo:  # fmt: skip
        """Import a rootfs tarball as template ``name`` (admin key); see the sync client."""
        return await self._client._call(_api.import_template(name, archive, on_base), on_progress)

    async def delete(self, name: str) -> None:
        """Delete a template; refused (Conflict) while sandboxes use it."""
        await self._client._call(_api.delete_template(name))


class AsyncNodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return await self._client._call(_api.list_nodes())


class AsyncSnapshots:
    """``client.snapshots``: named snapshots of sandboxes' files (see :class:`cloche.client.sync.Snapshots`)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def create(self, sandbox_id: str, name: str) -> SnapshotInfo:
        """Save the current files of a sandbox as ``name`` (raises :class:`Conflict` if taken)."""
        return await self._client._call(_api.create_snapshot(sandbox_id, name))

    async def list(self) -> list[SnapshotInfo]:
        """List this tenant's snapshots."""
        return await self._client._call(_api.list_snapshots())

    async def get(self, snapshot_id: str) -> SnapshotInfo:
        """Describe one snapshot (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_snapshot(snapshot_id))

    async def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot; sandboxes already created from it keep their files."""
        await self._client._call(_api.delete_snapshot(snapshot_id))


class AsyncSecrets:
    """``client.secrets``: values sandboxes can send without holding them (see
    :class:`cloche.client.sync.Secrets`)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def create(self, name: str, value: str, hosts: Sequence[str]) -> SecretInfo:
        """Store a secret sendable only to ``hosts`` (raises :class:`Conflict` if the name is taken)."""
        return await self._client._call(_api.create_secret(name, value, hosts))

    async def list(self) -> list[SecretInfo]:
        """List this tenant's secrets (names and hosts, never values)."""
        return await self._client._call(_api.list_secrets())

    async def get(self, name: str) -> SecretInfo:
        """Describe one secret (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_secret(name))

    async def update(self, name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> SecretInfo:
        """Replace the value, the hosts or both; with both, a missing secret is created."""
        return await self._client._call(_api.update_secret(name, value, hosts))

    async def delete(self, name: str) -> None:
        """Delete a secret (raises :class:`NotFound`)."""
        await self._client._call(_api.delete_secret(name))

    async def rotate_key(self, drop_old: bool = False) -> SecretKeyRotation:
        """Admin: re-encrypt every secret under a new key (old keys kept unless ``drop_old``)."""
        return await self._client._call(_api.rotate_secret_key(drop_old))
