"""The PostgreSQL state engine (psycopg 3, async, pooled), with the SQLite engine's rules.

Every conditional write is ONE statement whose WHERE clause carries the condition
(`UPDATE ... WHERE version = $n`, `INSERT ... ON CONFLICT DO UPDATE ... WHERE the old
row is a tombstone`): under READ COMMITTED a concurrent writer of the same row waits
for the row lock and re-evaluates the condition on the committed row, so a
compare-and-set can never be lost. A batch runs its ops in order in one transaction
and rolls all of them back when one fails; a `check` of an absent key first plants a
version-0 tombstone so that it has a row to lock. Log sequence numbers come from a
counter column of the namespace row, incremented in the appending transaction (the row
lock serialises appends per namespace, a rollback gives the number back: gap-free).

Group commit: PostgreSQL already shares one WAL flush between the transactions that
commit together, and the pool keeps many of them in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from cloche.state._wait import Waiters, notify_waiters, wait_for_entries
from cloche.state.engine import (
    READ_LOG_BYTES,
    Appended,
    Conflict,
    Entry,
    InvalidArgument,
    Item,
    KeyInfo,
    LogPage,
    Op,
    OpResult,
    OpsCounter,
    Page,
    StateError,
    StateLimits,
    Unavailable,
    check_conditions,
    check_key,
    check_log,
    check_ns,
    check_sandbox_id,
    check_seq,
    check_ttl,
    check_value,
    clamp_limit,
    prefix_bounds,
    validate_batch,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS state_namespaces (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    log_next BIGINT NOT NULL DEFAULT 1,
    log_first BIGINT NOT NULL DEFAULT 1,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS state_kv (
    ns_id BIGINT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value BYTEA,
    version BIGINT NOT NULL,
    expires_at DOUBLE PRECISION,
    PRIMARY KEY (ns_id, key)
);
CREATE INDEX IF NOT EXISTS state_kv_expiry ON state_kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS state_log (
    ns_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (ns_id, seq)
);
CREATE TABLE IF NOT EXISTS state_grants (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, name, sandbox_id)
);
CREATE TABLE IF NOT EXISTS state_log_idem (
    ns_id BIGINT NOT NULL,
    idem_key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (ns_id, idem_key)
);
"""
SCHEMA_LOCK = 0x636C6F636865  # advisory lock id while creating the schema

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
RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
EXPIRY_SWEEP_S = 30.0


class _Replay(Exception):
    def __init__(self, seq: int) -> None:
        self.seq = seq


class PostgresEngine:
    """StateEngine on a PostgreSQL database (tables prefixed `state_`)."""

    def __init__(self, dsn: str, limits: StateLimits | None = None, *, min_size: int = 4, max_size: int = 32,
                 poll_s: float = 0.25) -> None:  # fmt: skip
        self.dsn = dsn
        self.limits = limits or StateLimits()
        self.min_size = min_size
        self.max_size = max_size
        self.poll_s = poll_s
        self.stats = OpsCounter()
        self._pool: AsyncConnectionPool | None = None
        self._ns_ids: dict[tuple[str, str], int] = {}
        self._waiters: Waiters = {}
        self._waiters_lock = threading.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.set_autocommit(True)

        self._pool = AsyncConnectionPool(self.dsn, min_size=self.min_size, max_size=self.max_size, open=False,
                                         configure=configure, timeout=30)  # fmt: skip
        await self._pool.open(wait=True, timeout=30)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(SCHEMA)
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _conn(self) -> Any:
        if self._pool is None:
            raise RuntimeError("state engine is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (StateError, _Replay):
            raise
        except RETRYABLE:
            raise
        except psycopg.Error as e:
            raise Unavailable(f"state store unavailable: {type(e).__name__}: {e}") from e

    async def _ns(self, conn: Any, tenant: str, ns: str, create: bool) -> int | None:
        k = (tenant, ns)
        nid = self._ns_ids.get(k)
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
        self._ns_ids[k] = row[0]
        return row[0]

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            with contextlib.suppress(Exception):
                async with self._conn() as conn:
                    await conn.execute("UPDATE state_kv SET value = NULL, expires_at = NULL "
                                       "WHERE expires_at IS NOT NULL AND expires_at <= %s", (time.time(),))  # fmt: skip

    async def integrity_ok(self) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT count(*) FROM state_kv WHERE version < 0")
            return (await cur.fetchone())[0] == 0

    # ---- KV ------------------------------------------------------------------------------

    async def kv_get(self, tenant: str, ns: str, key: str) -> Item | None:
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        async with self._conn() as conn:
            nid = await self._ns(conn, tenant, ns, create=False)
            if nid is None:
                return None
            cur = await conn.execute(f"SELECT value, version, expires_at FROM state_kv "
                                     f"WHERE ns_id = %(nid)s AND key = %(key)s AND {LIVE}",
                                     {"nid": nid, "key": key, "now": time.time()})  # fmt: skip
            row = await cur.fetchone()
        return Item(key, bytes(row[0]), row[1], row[2]) if row else None

    async def kv_put(self, tenant: str, ns: str, key: str, value: bytes, *, if_match: int | None = None,
                     if_none_match: bool = False, ttl_s: float | None = None) -> int:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_value(value, self.limits)
        check_conditions(if_match, if_none_match)
        check_ttl(ttl_s, self.limits)
        async with self._conn() as conn:
            v = await _put(self, conn, tenant, ns, Op("put", key, bytes(value), if_match, if_none_match, ttl_s), None)
        self.stats.requests += 1
        return v

    async def kv_delete(self, tenant: str, ns: str, key: str, *, if_match: int | None = None) -> bool:
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_conditions(if_match, False)
        async with self._conn() as conn:
            return await _delete(self, conn, tenant, ns, Op("delete", key, if_match=if_match), None) is not None

    async def kv_list(self, tenant: str, ns: str, prefix: str = "", cursor: str | None = None,
                      limit: int = 100) -> Page:  # fmt: skip
        check_ns(ns, self.limits)
        limit = clamp_limit(limit, self.limits.max_list_limit)
        if prefix and (len(prefix.encode()) > self.limits.max_key_bytes or not prefix.isascii()
                       or not prefix.isprintable()):  # fmt: skip
            raise InvalidArgument("invalid prefix: printable ASCII, at most the key length limit")
        lo, hi = prefix_bounds(prefix)
        if cursor is not None and cursor >= lo:
            lo_op, lo = ">", cursor
        else:
            lo_op = ">="
        args: dict[str, Any] = {"lo": lo, "now": time.time(), "limit": limit + 1}
        sql = (f"SELECT key, version, length(value) FROM state_kv "
               f"WHERE ns_id = %(nid)s AND key {lo_op} %(lo)s AND {LIVE}")
        if hi is not None:
            sql += " AND key < %(hi)s"
            args["hi"] = hi
        sql += " ORDER BY key LIMIT %(limit)s"
        async with self._conn() as conn:
            nid = await self._ns(conn, tenant, ns, create=False)
            if nid is None:
                return Page([], None)
            args["nid"] = nid
            cur = await conn.execute(sql, args)
            rows = await cur.fetchall()
        items = [KeyInfo(r[0], r[1], r[2]) for r in rows[:limit]]
        return Page(items, items[-1].key if len(rows) > limit else None)

    async def batch(self, tenant: str, ns: str, ops: list[Op]) -> list[OpResult]:
        check_ns(ns, self.limits)
        validate_batch(ops, self.limits)
        for attempt in range(20):
            try:
                async with self._conn() as conn:
                    await self._ns(conn, tenant, ns, create=any(op.op == "put" for op in ops))
                    async with conn.transaction():
                        return await _batch(self, conn, tenant, ns, ops)
            except RETRYABLE:
                await asyncio.sleep(0.001 * (attempt + 1))
        raise Unavailable("batch kept deadlocking with concurrent batches; retry")

    # ---- log -----------------------------------------------------------------------------

    async def log_append(self, tenant: str, ns: str, data: bytes, idempotency_key: str | None = None) -> Appended:
        check_ns(ns, self.limits)
        check_log(data, idempotency_key, self.limits)
        async with self._conn() as conn:
            nid = await self._ns(conn, tenant, ns, create=True)
            idem = {"nid": nid, "k": idempotency_key}
            if idempotency_key is not None:
                cur = await conn.execute("SELECT seq FROM state_log_idem WHERE ns_id = %(nid)s AND idem_key = %(k)s",
                                         idem)  # fmt: skip
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
                        cur = await conn.execute("SELECT seq FROM state_log_idem WHERE ns_id = %(nid)s "
                                                 "AND idem_key = %(k)s", idem)  # fmt: skip
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
        notify_waiters(self._waiters, self._waiters_lock, {(tenant, ns)})
        return Appended(seq)

    async def log_read(self, tenant: str, ns: str, after: int = 0, limit: int = 100) -> LogPage:
        check_ns(ns, self.limits)
        check_seq(after, "after")
        limit = clamp_limit(limit, self.limits.max_read_limit)
        async with self._conn() as conn:
            nid = await self._ns(conn, tenant, ns, create=False)
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

    async def log_wait(self, tenant: str, ns: str, after: int, timeout_s: float, limit: int = 100) -> LogPage:
        return await wait_for_entries(self, self._waiters, self._waiters_lock, tenant, ns, after, timeout_s, limit,
                                      poll_s=self.poll_s)  # fmt: skip

    async def log_trim(self, tenant: str, ns: str, upto: int) -> int:
        check_ns(ns, self.limits)
        check_seq(upto, "upto")
        async with self._conn() as conn:
            nid = await self._ns(conn, tenant, ns, create=False)
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

    # ---- grants ----------------------------------------------------------------------------

    async def grant(self, tenant: str, ns: str, sandbox_id: str) -> None:
        check_ns(ns, self.limits)
        check_sandbox_id(sandbox_id)
        async with self._conn() as conn:
            await conn.execute("INSERT INTO state_grants (tenant_id, name, sandbox_id, created_at) "
                               "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                               (tenant, ns, sandbox_id, time.time()))  # fmt: skip

    async def revoke(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        check_ns(ns, self.limits)
        async with self._conn() as conn:
            cur = await conn.execute("DELETE FROM state_grants WHERE tenant_id = %s AND name = %s AND sandbox_id = %s",
                                     (tenant, ns, sandbox_id))  # fmt: skip
            return cur.rowcount > 0

    async def grants(self, tenant: str, ns: str) -> list[str]:
        check_ns(ns, self.limits)
        async with self._conn() as conn:
            cur = await conn.execute("SELECT sandbox_id FROM state_grants WHERE tenant_id = %s AND name = %s "
                                     "ORDER BY sandbox_id", (tenant, ns))  # fmt: skip
            return [r[0] for r in await cur.fetchall()]

    async def granted(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT 1 FROM state_grants WHERE tenant_id = %s AND name = %s "
                                     "AND sandbox_id = %s", (tenant, ns, sandbox_id))  # fmt: skip
            return await cur.fetchone() is not None


# ---- operations (on one connection; a batch runs them inside its transaction) ------------


async def _current(conn: Any, nid: int | None, key: str, now: float) -> int | None:
    if nid is None:
        return None
    cur = await conn.execute(CURRENT, {"nid": nid, "key": key, "now": now})
    row = await cur.fetchone()
    return row[0] if row and row[1] else None


async def _conflict(conn: Any, nid: int | None, op: Op, now: float, index: int | None) -> Conflict:
    current = await _current(conn, nid, op.key, now)
    if op.if_none_match:
        msg = f"key {op.key!r} exists (version {current})"
    elif current is None:
        msg = f"key {op.key!r} does not exist (If-Match {op.if_match})"
    else:
        msg = f"key {op.key!r} is at version {current}, not {op.if_match}"
    if index is not None:
        msg = f"ops[{index}]: {msg}"
    return Conflict(msg, key=op.key, current_version=current, index=index)


async def _put(eng: PostgresEngine, conn: Any, tenant: str, ns: str, op: Op, index: int | None) -> int:
    now = time.time()
    args = {"key": op.key, "value": op.value, "exp": now + op.ttl_s if op.ttl_s else None, "now": now,
            "ver": op.if_match}  # fmt: skip
    if op.if_match is not None:
        nid = await eng._ns(conn, tenant, ns, create=False)
        sql = PUT_MATCH
    else:
        nid = await eng._ns(conn, tenant, ns, create=True)
        sql = PUT_ABSENT if op.if_none_match else PUT_ANY
    row = None
    if nid is not None:
        args["nid"] = nid
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
    if row is None:
        raise await _conflict(conn, nid, op, now, index)
    return row[0]


async def _delete(eng: PostgresEngine, conn: Any, tenant: str, ns: str, op: Op, index: int | None) -> int | None:
    now = time.time()
    nid = await eng._ns(conn, tenant, ns, create=False)
    row = None
    if nid is not None:
        sql = DELETE_MATCH if op.if_match is not None else DELETE_ANY
        cur = await conn.execute(sql, {"nid": nid, "key": op.key, "ver": op.if_match, "now": now})
        row = await cur.fetchone()
    if row is None and op.if_match is not None:
        raise await _conflict(conn, nid, op, now, index)
    return row[0] if row else None


async def _check(eng: PostgresEngine, conn: Any, tenant: str, ns: str, op: Op, index: int) -> int | None:
    now = time.time()
    nid = await eng._ns(conn, tenant, ns, create=False)
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


async def _batch(eng: PostgresEngine, conn: Any, tenant: str, ns: str, ops: list[Op]) -> list[OpResult]:
    results = []
    for i, op in enumerate(ops):
        if op.op == "put":
            results.append(OpResult("put", op.key, await _put(eng, conn, tenant, ns, op, i)))
        elif op.op == "delete":
            v = await _delete(eng, conn, tenant, ns, op, i)
            results.append(OpResult("delete", op.key, v, v is not None))
        else:
            v = await _check(eng, conn, tenant, ns, op, i)
            results.append(OpResult("check", op.key, v, v is not None))
    return results
