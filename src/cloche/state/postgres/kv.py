"""Keys and values on PostgreSQL: each conditional write is ONE statement.

The WHERE clause carries the condition (`UPDATE ... WHERE version = $n`, `INSERT ... ON
CONFLICT DO UPDATE ... WHERE the old row is a tombstone`): under READ COMMITTED a
concurrent writer of the same row waits for the row lock and re-evaluates the condition
on the committed row, so a compare-and-set can never be lost. The operations run on a
connection they are given, so a batch runs them in order inside its transaction; a
`check` of an absent key first plants a version-0 tombstone so that it has a row to lock.
Arguments arrive validated (the engine checks them).
"""

from __future__ import annotations

import time
from typing import Any

from cloche.state.engine import Conflict, Item, KeyInfo, Op, OpResult, Page, conflict_of
from cloche.state.postgres.namespaces import Namespaces

LIVE = "value IS NOT NULL AND (expires_at IS NULL OR expires_at > %(now)s)"
PUT_ANY = (
    "INSERT INTO state_kv AS kv (ns_id, key, value, version, expires_at) "
    "VALUES (%(nid)s, %(key)s, %(value)s, 1, %(exp)s) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = EXCLUDED.value, version = kv.version + 1, "
    "expires_at = EXCLUDED.expires_at RETURNING version"
)
PUT_ABSENT = (
    "INSERT INTO state_kv AS kv (ns_id, key, value, version, expires_at) "
    "VALUES (%(nid)s, %(key)s, %(value)s, 1, %(exp)s) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = EXCLUDED.value, version = kv.version + 1, "
    "expires_at = EXCLUDED.expires_at "
    "WHERE kv.value IS NULL OR (kv.expires_at IS NOT NULL AND kv.expires_at <= %(now)s) RETURNING version"
)
PUT_MATCH = (
    "UPDATE state_kv SET value = %(value)s, version = version + 1, expires_at = %(exp)s "
    f"WHERE ns_id = %(nid)s AND key = %(key)s AND version = %(ver)s AND {LIVE} RETURNING version"
)
DELETE_ANY = (
    "UPDATE state_kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = %(nid)s AND key = %(key)s AND {LIVE} RETURNING version"
)
DELETE_MATCH = (
    "UPDATE state_kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = %(nid)s AND key = %(key)s AND version = %(ver)s AND {LIVE} RETURNING version"
)
CURRENT = f"SELECT version, {LIVE} FROM state_kv WHERE ns_id = %(nid)s AND key = %(key)s"
EXPIRE = "UPDATE state_kv SET value = NULL, expires_at = NULL WHERE expires_at IS NOT NULL AND expires_at <= %s"


class Kv:
    """The KV operations over the namespaces' ids."""

    def __init__(self, names: Namespaces) -> None:
        self.names = names

    async def get(self, conn: Any, tenant: str, ns: str, key: str) -> Item | None:
        nid = await self.names.id(conn, tenant, ns, create=False)
        if nid is None:
            return None
        cur = await conn.execute(f"SELECT value, version, expires_at FROM state_kv "
                                 f"WHERE ns_id = %(nid)s AND key = %(key)s AND {LIVE}",
                                 {"nid": nid, "key": key, "now": time.time()})  # fmt: skip
        row = await cur.fetchone()
        return Item(key, bytes(row[0]), row[1], row[2]) if row else None

    async def list(self, conn: Any, tenant: str, ns: str, lo: str, hi: str | None, cursor: str | None,
                   limit: int) -> Page:  # fmt: skip
        """Live keys from `lo` (or after `cursor`) up to `hi`, in key order."""
        if cursor is not None and cursor >= lo:
            lo_op, lo = ">", cursor
        else:
            lo_op = ">="
        args: dict[str, Any] = {"lo": lo, "now": time.time(), "limit": limit + 1}
        sql = (
            f"SELECT key, version, length(value) FROM state_kv WHERE ns_id = %(nid)s AND key {lo_op} %(lo)s AND {LIVE}"
        )
        if hi is not None:
            sql += " AND key < %(hi)s"
            args["hi"] = hi
        sql += " ORDER BY key LIMIT %(limit)s"
        nid = await self.names.id(conn, tenant, ns, create=False)
        if nid is None:
            return Page([], None)
        args["nid"] = nid
        cur = await conn.execute(sql, args)
        rows = await cur.fetchall()
        items = [KeyInfo(r[0], r[1], r[2]) for r in rows[:limit]]
        return Page(items, items[-1].key if len(rows) > limit else None)

    async def put(self, conn: Any, tenant: str, ns: str, op: Op, index: int | None) -> int:
        now = time.time()
        args = {"key": op.key, "value": op.value, "exp": now + op.ttl_s if op.ttl_s else None, "now": now,
                "ver": op.if_match}  # fmt: skip
        if op.if_match is not None:
            nid = await self.names.id(conn, tenant, ns, create=False)
            sql = PUT_MATCH
        else:
            nid = await self.names.id(conn, tenant, ns, create=True)
            sql = PUT_ABSENT if op.if_none_match else PUT_ANY
        row = None
        if nid is not None:
            args["nid"] = nid
            cur = await conn.execute(sql, args)
            row = await cur.fetchone()
        if row is None:
            raise await _conflict(conn, nid, op, now, index)
        return row[0]

    async def delete(self, conn: Any, tenant: str, ns: str, op: Op, index: int | None) -> int | None:
        now = time.time()
        nid = await self.names.id(conn, tenant, ns, create=False)
        row = None
        if nid is not None:
            sql = DELETE_MATCH if op.if_match is not None else DELETE_ANY
            cur = await conn.execute(sql, {"nid": nid, "key": op.key, "ver": op.if_match, "now": now})
            row = await cur.fetchone()
        if row is None and op.if_match is not None:
            raise await _conflict(conn, nid, op, now, index)
        return row[0] if row else None

    async def check(self, conn: Any, tenant: str, ns: str, op: Op, index: int) -> int | None:
        now = time.time()
        nid = await self.names.id(conn, tenant, ns, create=False)
        current = None
        if nid is not None:
            # Lock the row until commit so the checked state holds for the whole batch; an
            # absent key gets a version-0 tombstone first, so there is a row to lock.
            await conn.execute("INSERT INTO state_kv (ns_id, key, value, version) VALUES (%s, %s, NULL, 0) "
                               "ON CONFLICT DO NOTHING", (nid, op.key))  # fmt: skip
            cur = await conn.execute(CURRENT + " FOR SHARE", {"nid": nid, "key": op.key, "now": now})
            row = await cur.fetchone()
            current = row[0] if row and row[1] else None
        if (op.if_none_match and current is not None) or (op.if_match is not None and current != op.if_match):
            raise await _conflict(conn, nid, op, now, index)
        return current

    async def batch(self, conn: Any, tenant: str, ns: str, ops: list[Op]) -> list[OpResult]:
        """The ops in order, on a connection inside the batch's transaction."""
        results = []
        for i, op in enumerate(ops):
            if op.op == "put":
                results.append(OpResult("put", op.key, await self.put(conn, tenant, ns, op, i)))
            elif op.op == "delete":
                v = await self.delete(conn, tenant, ns, op, i)
                results.append(OpResult("delete", op.key, v, v is not None))
            else:
                v = await self.check(conn, tenant, ns, op, i)
                results.append(OpResult("check", op.key, v, v is not None))
        return results


async def _current(conn: Any, nid: int | None, key: str, now: float) -> int | None:
    if nid is None:
        return None
    cur = await conn.execute(CURRENT, {"nid": nid, "key": key, "now": now})
    row = await cur.fetchone()
    return row[0] if row and row[1] else None


async def _conflict(conn: Any, nid: int | None, op: Op, now: float, index: int | None) -> Conflict:
    return conflict_of(op, await _current(conn, nid, op.key, now), index)
