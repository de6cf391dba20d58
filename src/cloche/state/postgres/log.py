"""Append-only logs on PostgreSQL: gap-free sequence numbers and idempotent appends.

Sequence numbers come from a counter column of the namespace row, incremented in the
appending transaction: the row lock serialises appends per namespace, and a rollback
gives the number back, so there are no gaps. An idempotency key maps to the sequence
number of the append that first used it. Arguments arrive validated (the engine checks
them); the operations run on a connection they are given.
"""

from __future__ import annotations

import time
from typing import Any

from cloche.state.engine import READ_LOG_BYTES, Appended, Entry, LogPage
from cloche.state.postgres.namespaces import Namespaces

IDEM_SEQ = "SELECT seq FROM state_log_idem WHERE ns_id = %(nid)s AND idem_key = %(k)s"


class _Replay(Exception):
    def __init__(self, seq: int) -> None:
        self.seq = seq


class Log:
    """The log operations over the namespaces' ids."""

    def __init__(self, names: Namespaces) -> None:
        self.names = names

    async def append(self, conn: Any, tenant: str, ns: str, data: bytes, idempotency_key: str | None) -> Appended:
        nid = await self.names.id(conn, tenant, ns, create=True)
        idem = {"nid": nid, "k": idempotency_key}
        if idempotency_key is not None:
            cur = await conn.execute(IDEM_SEQ, idem)
            row = await cur.fetchone()
            if row:
                return Appended(row[0], replayed=True)
        try:
            async with conn.transaction():
                cur = await conn.execute("UPDATE state_namespaces SET log_next = log_next + 1 WHERE id = %s "
                                         "RETURNING log_next - 1", (nid,))  # fmt: skip
                (seq,) = await cur.fetchone()
                now = time.time()
                if idempotency_key is not None:
                    # The namespace row is locked now: an append with the same key that
                    # committed meanwhile is visible to this new statement.
                    cur = await conn.execute(IDEM_SEQ, idem)
                    row = await cur.fetchone()
                    if row:
                        raise _Replay(row[0])
                await conn.execute("INSERT INTO state_log (ns_id, seq, data, created_at) VALUES (%s, %s, %s, %s)",
                                   (nid, seq, bytes(data), now))  # fmt: skip
                if idempotency_key is not None:
                    await conn.execute("INSERT INTO state_log_idem (ns_id, idem_key, seq, created_at) "
                                       "VALUES (%s, %s, %s, %s)", (nid, idempotency_key, seq, now))  # fmt: skip
        except _Replay as r:
            return Appended(r.seq, replayed=True)
        return Appended(seq)

    async def read(self, conn: Any, tenant: str, ns: str, after: int, limit: int) -> LogPage:
        nid = await self.names.id(conn, tenant, ns, create=False)
        if nid is None:
            return LogPage([], 0, 1)
        cur = await conn.execute("SELECT seq, data FROM state_log WHERE ns_id = %s AND seq > %s ORDER BY seq "
                                 "LIMIT %s", (nid, after, limit))  # fmt: skip
        items: list[Entry] = []
        size = 0
        for seq, data in await cur.fetchall():
            if items and size + len(data) > READ_LOG_BYTES:
                break
            items.append(Entry(seq, bytes(data)))
            size += len(data)
        cur = await conn.execute("SELECT log_next, log_first FROM state_namespaces WHERE id = %s", (nid,))
        log_next, log_first = await cur.fetchone()
        return LogPage(items, log_next - 1, log_first)

    async def trim(self, conn: Any, tenant: str, ns: str, upto: int) -> int:
        nid = await self.names.id(conn, tenant, ns, create=False)
        if nid is None:
            return 1
        async with conn.transaction():
            cur = await conn.execute("SELECT log_next, log_first FROM state_namespaces WHERE id = %s FOR UPDATE",
                                     (nid,))  # fmt: skip
            log_next, log_first = await cur.fetchone()
            upto = min(upto, log_next - 1)
            if upto < log_first:
                return log_first
            await conn.execute("DELETE FROM state_log WHERE ns_id = %s AND seq <= %s", (nid, upto))
            await conn.execute("UPDATE state_namespaces SET log_first = %s WHERE id = %s", (upto + 1, nid))
            return upto + 1
