"""`PostgresEngine`: the StateEngine on PostgreSQL (psycopg 3, async, pooled), with the
SQLite engine's rules.

This is the composition: it validates arguments (the same checks as SQLite), lends
each operation a pooled connection (turning driver errors into `Unavailable`), retries
batches that deadlock, sweeps expired keys, and wakes long polls on appends. The SQL
lives in `kv.py`, `log.py` and `grants.py`.

Fencing (cluster mode): a write given a `Fence` runs in a transaction whose first
statement is `pgfence.check_token`, so a write by an instance that has since been claimed
again is rejected with `StaleFence` and leaves nothing behind. A write without one is
the plain autocommit statement it always was: no BEGIN, no extra round trip.

Group commit: PostgreSQL already shares one WAL flush between the transactions that
commit together, and the pool keeps many of them in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from cloche.cluster.pgfence import StaleFencingToken, check_token
from cloche.constants import PG_CONNECTION_BOUNDS
from cloche.state._wait import Waiters, notify_waiters, wait_for_entries
from cloche.state.engine import (
    Appended,
    Fence,
    InvalidArgument,
    Item,
    LogPage,
    Op,
    OpResult,
    OpsCounter,
    Page,
    StaleFence,
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
from cloche.state.postgres import grants as grant_rows
from cloche.state.postgres.kv import EXPIRE, Kv
from cloche.state.postgres.log import Log
from cloche.state.postgres.namespaces import Namespaces
from cloche.state.postgres.schema import create_schema

RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
EXPIRY_SWEEP_S = 30.0


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
        self._names = Namespaces()
        self._kv = Kv(self._names)
        self._log = Log(self._names)
        self._waiters: Waiters = {}
        self._waiters_lock = threading.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.set_autocommit(True)

        # every connection bounded: one cut off by the network fails in seconds
        self._pool = AsyncConnectionPool(self.dsn, min_size=self.min_size, max_size=self.max_size, open=False,
                                         configure=configure, timeout=30,
                                         kwargs=dict(PG_CONNECTION_BOUNDS))  # fmt: skip
        await self._pool.open(wait=True, timeout=30)
        async with self._pool.connection() as conn:
            await create_schema(conn)
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
    async def _conn(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise RuntimeError("state engine is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except RETRYABLE:
            raise
        except psycopg.Error as e:
            raise Unavailable(f"state store unavailable: {type(e).__name__}: {e}") from e

    @contextlib.asynccontextmanager
    async def _writing(self, fence: Fence | None) -> AsyncIterator[Any]:
        """A pooled connection for one write; with a fence, inside a transaction that
        checks the fencing token first (and commits when the block ends)."""
        async with self._conn() as conn:
            if fence is None:
                yield conn
                return
            async with conn.transaction():
                await _check_fence(conn, fence)
                yield conn

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            with contextlib.suppress(Exception):
                async with self._conn() as conn:
                    await conn.execute(EXPIRE, (time.time(),))

    async def integrity_ok(self) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT count(*) FROM state_kv WHERE version < 0")
            return (await cur.fetchone())[0] == 0

    # ---- KV ------------------------------------------------------------------------------

    async def kv_get(self, tenant: str, ns: str, key: str) -> Item | None:
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        async with self._conn() as conn:
            return await self._kv.get(conn, tenant, ns, key)

    async def kv_put(self, tenant: str, ns: str, key: str, value: bytes, *, if_match: int | None = None,
                     if_none_match: bool = False, ttl_s: float | None = None,
                     fence: Fence | None = None) -> int:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_value(value, self.limits)
        check_conditions(if_match, if_none_match)
        check_ttl(ttl_s, self.limits)
        async with self._writing(fence) as conn:
            v = await self._kv.put(conn, tenant, ns, Op("put", key, bytes(value), if_match, if_none_match, ttl_s), None)
        self.stats.requests += 1
        return v

    async def kv_delete(self, tenant: str, ns: str, key: str, *, if_match: int | None = None,
                        fence: Fence | None = None) -> bool:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_conditions(if_match, False)
        async with self._writing(fence) as conn:
            return await self._kv.delete(conn, tenant, ns, Op("delete", key, if_match=if_match), None) is not None

    async def kv_list(self, tenant: str, ns: str, prefix: str = "", cursor: str | None = None,
                      limit: int = 100) -> Page:  # fmt: skip
        check_ns(ns, self.limits)
        limit = clamp_limit(limit, self.limits.max_list_limit)
        if prefix and (len(prefix.encode()) > self.limits.max_key_bytes or not prefix.isascii()
                       or not prefix.isprintable()):  # fmt: skip
            raise InvalidArgument("invalid prefix: printable ASCII, at most the key length limit")
        lo, hi = prefix_bounds(prefix)
        async with self._conn() as conn:
            return await self._kv.list(conn, tenant, ns, lo, hi, cursor, limit)

    async def batch(self, tenant: str, ns: str, ops: list[Op], *, fence: Fence | None = None) -> list[OpResult]:
        check_ns(ns, self.limits)
        validate_batch(ops, self.limits)
        for attempt in range(20):
            try:
                async with self._conn() as conn:
                    await self._names.id(conn, tenant, ns, create=any(op.op == "put" for op in ops))
                    async with conn.transaction():
                        if fence is not None:
                            await _check_fence(conn, fence)
                        return await self._kv.batch(conn, tenant, ns, ops)
            except RETRYABLE:
                await asyncio.sleep(0.001 * (attempt + 1))
        raise Unavailable("batch kept deadlocking with concurrent batches; retry")

    # ---- log -----------------------------------------------------------------------------

    async def log_append(self, tenant: str, ns: str, data: bytes, idempotency_key: str | None = None, *,
                         fence: Fence | None = None) -> Appended:  # fmt: skip
        check_ns(ns, self.limits)
        check_log(data, idempotency_key, self.limits)
        async with self._writing(fence) as conn:
            appended = await self._log.append(conn, tenant, ns, data, idempotency_key)
        if not appended.replayed:
            notify_waiters(self._waiters, self._waiters_lock, {(tenant, ns)})
        return appended

    async def log_read(self, tenant: str, ns: str, after: int = 0, limit: int = 100) -> LogPage:
        check_ns(ns, self.limits)
        check_seq(after, "after")
        limit = clamp_limit(limit, self.limits.max_read_limit)
        async with self._conn() as conn:
            return await self._log.read(conn, tenant, ns, after, limit)

    async def log_wait(self, tenant: str, ns: str, after: int, timeout_s: float, limit: int = 100) -> LogPage:
        return await wait_for_entries(self, self._waiters, self._waiters_lock, tenant, ns, after, timeout_s, limit,
                                      poll_s=self.poll_s)  # fmt: skip

    async def log_trim(self, tenant: str, ns: str, upto: int, *, fence: Fence | None = None) -> int:
        check_ns(ns, self.limits)
        check_seq(upto, "upto")
        async with self._writing(fence) as conn:
            return await self._log.trim(conn, tenant, ns, upto)

    # ---- grants ----------------------------------------------------------------------------

    async def grant(self, tenant: str, ns: str, sandbox_id: str) -> None:
        check_ns(ns, self.limits)
        check_sandbox_id(sandbox_id)
        async with self._conn() as conn:
            await grant_rows.grant(conn, tenant, ns, sandbox_id)

    async def revoke(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        check_ns(ns, self.limits)
        async with self._conn() as conn:
            return await grant_rows.revoke(conn, tenant, ns, sandbox_id)

    async def grants(self, tenant: str, ns: str) -> list[str]:
        check_ns(ns, self.limits)
        async with self._conn() as conn:
            return await grant_rows.grants(conn, tenant, ns)

    async def granted(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        async with self._conn() as conn:
            return await grant_rows.granted(conn, tenant, ns, sandbox_id)

    # ---- fencing ---------------------------------------------------------------------------

    async def advance_fence(self, fence: Fence) -> None:
        """Make `fence` the newest token of its instance now (StaleFence if a newer one
        is already known): call on claiming an instance, before it starts."""
        async with self._writing(fence):
            pass


async def _check_fence(conn: Any, fence: Fence) -> None:
    """The fencing check, as the first statement of a write's transaction."""
    try:
        await check_token(conn, fence.app, fence.key, fence.token)
    except StaleFencingToken as e:
        raise StaleFence(f"instance {fence.app}/{fence.key} was claimed again: this write carries fencing token "
                         f"{e.token}, and the newest seen is {e.newest}; nothing was written") from e  # fmt: skip
