"""Which sandboxes may use a tenant's namespace (`state_grants`), on PostgreSQL.

Grants are keyed by the namespace's name, not its id: a grant may exist before the
namespace's first write.
"""

from __future__ import annotations

import time
from typing import Any


async def grant(conn: Any, tenant: str, ns: str, sandbox_id: str) -> None:
    await conn.execute("INSERT INTO state_grants (tenant_id, name, sandbox_id, created_at) "
                       "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                       (tenant, ns, sandbox_id, time.time()))  # fmt: skip


async def revoke(conn: Any, tenant: str, ns: str, sandbox_id: str) -> bool:
    cur = await conn.execute("DELETE FROM state_grants WHERE tenant_id = %s AND name = %s AND sandbox_id = %s",
                             (tenant, ns, sandbox_id))  # fmt: skip
    return cur.rowcount > 0


async def grants(conn: Any, tenant: str, ns: str) -> list[str]:
    cur = await conn.execute("SELECT sandbox_id FROM state_grants WHERE tenant_id = %s AND name = %s "
                             "ORDER BY sandbox_id", (tenant, ns))  # fmt: skip
    return [r[0] for r in await cur.fetchall()]


async def granted(conn: Any, tenant: str, ns: str, sandbox_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM state_grants WHERE tenant_id = %s AND name = %s "
                             "AND sandbox_id = %s", (tenant, ns, sandbox_id))  # fmt: skip
    return await cur.fetchone() is not None
