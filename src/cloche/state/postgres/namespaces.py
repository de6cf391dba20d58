"""A namespace's row id, looked up once per process.

Every KV and log statement is keyed by the namespace's id; the row is created on the
first write and never renamed or deleted, so the id can be cached for good.
"""

from __future__ import annotations

import time
from typing import Any


class Namespaces:
    """(tenant, namespace) -> id of its `state_namespaces` row, cached."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}

    async def id(self, conn: Any, tenant: str, ns: str, create: bool) -> int | None:
        """The namespace's id; None when it has no row and `create` is false."""
        k = (tenant, ns)
        nid = self._ids.get(k)
        if nid is not None:
            return nid
        if create:
            await conn.execute(
                "INSERT INTO state_namespaces (tenant_id, name, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id, name) DO NOTHING", (tenant, ns, time.time()))  # fmt: skip
        cur = await conn.execute("SELECT id FROM state_namespaces WHERE tenant_id = %s AND name = %s", k)
        row = await cur.fetchone()
        if row is None:
            return None
        self._ids[k] = row[0]
        return row[0]
