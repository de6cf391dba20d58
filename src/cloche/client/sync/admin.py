"""The blocking face of the tenant-wide resources: tenants, templates, nodes, snapshots
and secrets.

Mirrored by :mod:`cloche.client.async_.admin`; the requests live in :mod:`cloche.client._api`.
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
from ._sender import Sender

T = TypeVar("T")


class Tenants:
    """``client.tenants``: tenant and API-key administration (admin key required)."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def create(
        self,
        name: str,
        max_sandboxes: int | None = None,
        max_cpu: float | None = None,
        max_memory_mb: int | None = None,
    ) -> NewTenant:
        """Create a tenant with optional quotas; the result holds its first API key."""
        return self._client._call(
            _api.create_tenant(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
        )

    def list(self) -> list[Tenant]:
        """List every tenant."""
        return self._client._call(_api.list_tenants())

    def create_key(self, tenant_id: str) -> ApiKey:
        """Issue an additional API key for the tenant."""
        return self._client._call(_api.create_key(tenant_id))

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of the tenant's API keys; it stops working immediately."""
        self._client._call(_api.revoke_key(tenant_id, key_id))


class Templates:
    """``client.templates``: the root filesystems sandboxes are built on."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def list(self) -> list[TemplateInfo]:
        """Every template (``base`` included)."""
        return self._client._call(_api.list_templates())

    def import_tar(self, name: str, archive: bytes | IO[bytes], on_base: bool = False,
                   on_progress: ProgressCallback | None = None) -> TemplateInfo:  # fmt: skip
        """Import a rootfs tarball as template ``name`` (admin key). With ``on_base`` the
        files are laid over ``base`` (the host's /usr, read-only), e.g. an agent's code.
        ``on_progress(nbytes)`` is called as the archive is sent."""
        return self._client._call(_api.import_template(name, archive, on_base), on_progress)

    def delete(self, name: str) -> None:
        """Delete a template; refused (Conflict) while sandboxes use it."""
        self._client._call(_api.delete_template(name))


class Nodes:
    """``client.nodes``: worker-node inspection (admin key required)."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def list(self) -> list[NodeInfo]:
        """List the worker nodes with their capacity, allocation and warm pools."""
        return self._client._call(_api.list_nodes())


class Snapshots:
    """``client.snapshots``: named snapshots of sandboxes' files.

    Create one with :meth:`Sandbox.snapshot` (or :meth:`create`), start a sandbox from it
    with ``client.sandboxes.create(snapshot=snapshot.id)``.
    """

    def __init__(self, client: Sender) -> None:
        self._client = client

    def create(self, sandbox_id: str, name: str) -> SnapshotInfo:
        """Save the current files of a sandbox (running or hibernated) as ``name``.

        Raises:
            Conflict: The tenant already has a snapshot with this name.
        """
        return self._client._call(_api.create_snapshot(sandbox_id, name))

    def list(self) -> list[SnapshotInfo]:
        """List this tenant's snapshots."""
        return self._client._call(_api.list_snapshots())

    def get(self, snapshot_id: str) -> SnapshotInfo:
        """Describe one snapshot (raises :class:`NotFound`)."""
        return self._client._call(_api.get_snapshot(snapshot_id))

    def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot; sandboxes already created from it keep their files."""
        self._client._call(_api.delete_snapshot(snapshot_id))


class Secrets:
    """``client.secrets``: values the tenant's sandboxes can send without holding them.

    A secret is referenced as ``${secret:NAME}`` in a header of a sandbox's
    ``network.rules``; the node fills it in on the way out, and only for requests to the
    secret's ``hosts``. It is stored encrypted and never returned by any call.
    """

    def __init__(self, client: Sender) -> None:
        self._client = client

    def create(self, name: str, value: str, hosts: Sequence[str]) -> SecretInfo:
        """Store a secret.

        Args:
            name: Letters, digits, ``_``, ``.`` and ``-`` (at most 64, not starting with
                a digit, ``.`` or ``-``).
            value: At most 8 KiB, one line (it is sent in an HTTP header).
            hosts: Host names or ``*.wildcard`` names it may be sent to (no addresses).

        Raises:
            Conflict: The tenant already has a secret with this name.
            InvalidRequest: A bad name, value or host (the message names the field).
        """
        return self._client._call(_api.create_secret(name, value, hosts))

    def list(self) -> list[SecretInfo]:
        """List this tenant's secrets (names and hosts, never values)."""
        return self._client._call(_api.list_secrets())

    def get(self, name: str) -> SecretInfo:
        """Describe one secret (raises :class:`NotFound`)."""
        return self._client._call(_api.get_secret(name))

    def update(self, name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> SecretInfo:
        """Replace the value, the hosts or both; with both, a missing secret is created.

        Raises:
            NotFound: No such secret, and not both ``value`` and ``hosts`` were given.
        """
        return self._client._call(_api.update_secret(name, value, hosts))

    def delete(self, name: str) -> None:
        """Delete a secret (raises :class:`NotFound`); requests using it are refused from then on."""
        self._client._call(_api.delete_secret(name))

    def rotate_key(self, drop_old: bool = False) -> SecretKeyRotation:
        """Admin: re-encrypt every secret under a new key. The old keys stay in the
        server's key file unless ``drop_old`` (then only backups need them)."""
        return self._client._call(_api.rotate_secret_key(drop_old))
