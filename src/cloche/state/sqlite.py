"""The embedded state engine: one SQLite file (WAL, synchronous=FULL) with group commit.

Writes go to one writer thread through a queue. The writer runs each request as it takes
it, and those that arrive meanwhile (up to `max_group`) join the same transaction, which
it commits once, so concurrent writers share a single fsync; a request's conditions are
checked inside that transaction, and a request that fails (a condition, a bad op in a
batch) is rolled back to its own SAVEPOINT without touching the others. Nobody is
answered before the commit that holds their write returns, so every acknowledged write
is durable. The writer is state/sqlite_writer.py, what each write does to the tables
state/sqlite_writes.py.

Reads run inline on the caller's thread on a connection of their own (WAL readers never
wait for the writer), so a point read costs a few microseconds and no thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloche.state import sqlite_writes as writes
from cloche.state._wait import Waiters, notify_waiters, wait_for_entries
from cloche.state.engine import (
    READ_LOG_BYTES,
    Appended,
    Entry,
    Fence,
    InvalidArgument,
    Item,
    KeyInfo,
    LogPage,
    Op,
    OpResult,
    OpsCounter,
    Page,
    StateLimits,
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
from cloche.state.sqlite_writer import GroupWriter
from cloche.state.sqlite_writes import LIVE

SCHEMA = """
CREATE TABLE IF NOT EXISTS namespaces (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    log_next INTEGER NOT NULL DEFAULT 1,
    log_first INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS kv (
    ns_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB,               -- NULL: a tombstone (deleted); the version lives on
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (ns_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS log (
    ns_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (ns_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name, sandbox_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_idem (
    ns_id INTEGER NOT NULL,
    idem_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (ns_id, idem_key)
) WITHOUT ROWID;
"""


class SqliteEngine:
    """StateEngine on DATA/state.db. `max_group=1` turns group commit off (one
    transaction and one fsync per write: the naive baseline of the benchmarks).

    The writes accept a `fence` and ignore it: SQLite serves one machine (`cloche up`),
    where no other node can claim an instance again, so there is nothing to fence."""

    def __init__(self, path: Path, limits: StateLimits | None = None, *, max_group: int = 1024,
                 synchronous: str = "FULL") -> None:  # fmt: skip
        self.path = Path(path)
        self.limits = limits or StateLimits()
        self.max_group = max_group
        self.synchronous = synchronous
        self.stats = OpsCounter()
        self._writes: GroupWriter | None = None  # the writer thread, from `open()`
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._ns_ids: dict[tuple[str, str], int] = {}
        self._waiters: Waiters = {}
        self._waiters_lock = threading.Lock()
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                             cached_statements=64)  # fmt: skip
        db.execute("PRAGMA busy_timeout=10000")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        self._writes = GroupWriter(db, self.max_group, self.stats, self._ns_ids, self._notify, writes.sweep_expired)
        self._writes.start()

    async def close(self) -> None:
        if self._closed or self._writes is None:
            return
        self._closed = True
        await self._writes.close()
        with self._readers_lock:
            for db in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._readers.clear()

    def integrity_ok(self) -> bool:
        return self._reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def _write(self, fn: Callable[..., Any], *args: Any, multi: bool = False,
               notify: tuple[str, str] | None = None) -> asyncio.Future[Any]:  # fmt: skip
        """The write queued for the writer thread; await it for its result. A plain
        function, not a coroutine: the hot path saves two coroutine frames per write."""
        if self._closed or self._writes is None:
            raise RuntimeError("state engine is closed")
        return self._writes.submit(fn, args, multi, notify)

    # ---- the writer thread -------------------------------------------------------------
    # ---- readers ---------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _ns_r(self, tenant: str, ns: str) -> int | None:
        k = (tenant, ns)
        nid = self._ns_ids.get(k)
        if nid is None:
            row = self._reader().execute("SELECT id FROM namespaces WHERE tenant_id = ? AND name = ?", k).fetchone()
            if row is None:
                return None
            nid = self._ns_ids[k] = row[0]
        return nid

    # ---- KV ------------------------------------------------------------------------------

    async def kv_get(self, tenant: str, ns: str, key: str) -> Item | None:
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        nid = self._ns_r(tenant, ns)
        if nid is None:
            return None
        row = (
            self._reader()
            .execute(
                f"SELECT value, version, expires_at FROM kv WHERE ns_id = ? AND key = ? AND {LIVE}",
                (nid, key, time.time()),
            )
            .fetchone()
        )
        return Item(key, bytes(row[0]), row[1], row[2]) if row else None

    async def kv_put(self, tenant: str, ns: str, key: str, value: bytes, *, if_match: int | None = None,
                     if_none_match: bool = False, ttl_s: float | None = None,
                     fence: Fence | None = None) -> int:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_value(value, self.limits)
        check_conditions(if_match, if_none_match)
        check_ttl(ttl_s, self.limits)
        if if_match is None and not if_none_match and ttl_s is None:  # the hot path
            return await self._write(writes.put_any, tenant, ns, key, value)
        return await self._write(writes.put, tenant, ns, Op("put", key, value, if_match, if_none_match, ttl_s), None)

    async def kv_delete(self, tenant: str, ns: str, key: str, *, if_match: int | None = None,
                        fence: Fence | None = None) -> bool:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_conditions(if_match, False)
        return await self._write(writes.delete, tenant, ns, Op("delete", key, if_match=if_match), None) is not None

    async def kv_list(self, tenant: str, ns: str, prefix: str = "", cursor: str | None = None,
                      limit: int = 100) -> Page:  # fmt: skip
        check_ns(ns, self.limits)
        limit = clamp_limit(limit, self.limits.max_list_limit)
        if prefix and (len(prefix.encode()) > self.limits.max_key_bytes or not prefix.isascii()
                       or not prefix.isprintable()):  # fmt: skip
            raise InvalidArgument("invalid prefix: printable ASCII, at most the key length limit")
        nid = self._ns_r(tenant, ns)
        if nid is None:
            return Page([], None)
        lo, hi = prefix_bounds(prefix)
        if cursor is not None and cursor >= lo:
            lo_op, lo = ">", cursor
        else:
            lo_op = ">="
        sql = f"SELECT key, version, length(value) FROM kv WHERE ns_id = ? AND key {lo_op} ? AND {LIVE}"
        args: list[Any] = [nid, lo, time.time()]
        if hi is not None:
            sql += " AND key < ?"
            args.append(hi)
        sql += " ORDER BY key LIMIT ?"
        args.append(limit + 1)
        rows = self._reader().execute(sql, args).fetchall()
        items = [KeyInfo(r[0], r[1], r[2]) for r in rows[:limit]]
        return Page(items, items[-1].key if len(rows) > limit else None)

    async def batch(self, tenant: str, ns: str, ops: list[Op], *, fence: Fence | None = None) -> list[OpResult]:
        check_ns(ns, self.limits)
        validate_batch(ops, self.limits)
        return await self._write(writes.batch, tenant, ns, ops, multi=True)

    # ---- log -----------------------------------------------------------------------------

    async def log_append(self, tenant: str, ns: str, data: bytes, idempotency_key: str | None = None, *,
                         fence: Fence | None = None) -> Appended:  # fmt: skip
        check_ns(ns, self.limits)
        check_log(data, idempotency_key, self.limits)
        return await self._write(
            writes.append, tenant, ns, bytes(data), idempotency_key, multi=True, notify=(tenant, ns)
        )

    async def log_read(self, tenant: str, ns: str, after: int = 0, limit: int = 100) -> LogPage:
        check_ns(ns, self.limits)
        check_seq(after, "after")
        limit = clamp_limit(limit, self.limits.max_read_limit)
        nid = self._ns_r(tenant, ns)
        if nid is None:
            return LogPage([], 0, 1)
        db = self._reader()
        db.execute("BEGIN")
        try:
            cur = db.execute("SELECT seq, data FROM log WHERE ns_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                             (nid, after, limit))  # fmt: skip
            items: list[Entry] = []
            size = 0
            for seq, data in cur:
                if items and size + len(data) > READ_LOG_BYTES:
                    break
                items.append(Entry(seq, bytes(data)))
                size += len(data)
            cur.close()
            log_next, log_first = db.execute("SELECT log_next, log_first FROM namespaces WHERE id = ?",
                                             (nid,)).fetchone()  # fmt: skip
        finally:
            db.execute("COMMIT")
        return LogPage(items, log_next - 1, log_first)

    async def log_wait(self, tenant: str, ns: str, after: int, timeout_s: float, limit: int = 100) -> LogPage:
        return await wait_for_entries(self, self._waiters, self._waiters_lock, tenant, ns, after, timeout_s, limit)

    async def log_trim(self, tenant: str, ns: str, upto: int, *, fence: Fence | None = None) -> int:
        check_ns(ns, self.limits)
        check_seq(upto, "upto")
        return await self._write(writes.trim, tenant, ns, upto, multi=True)

    # ---- grants ----------------------------------------------------------------------------

    async def grant(self, tenant: str, ns: str, sandbox_id: str) -> None:
        check_ns(ns, self.limits)
        check_sandbox_id(sandbox_id)
        await self._write(writes.grant, tenant, ns, sandbox_id)

    async def revoke(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        check_ns(ns, self.limits)
        return await self._write(writes.revoke, tenant, ns, sandbox_id)

    async def grants(self, tenant: str, ns: str) -> list[str]:
        check_ns(ns, self.limits)
        rows = self._reader().execute("SELECT sandbox_id FROM grants WHERE tenant_id = ? AND name = ? "
                                      "ORDER BY sandbox_id", (tenant, ns)).fetchall()  # fmt: skip
        return [r[0] for r in rows]

    async def granted(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        row = self._reader().execute("SELECT 1 FROM grants WHERE tenant_id = ? AND name = ? AND sandbox_id = ?",
                                     (tenant, ns, sandbox_id)).fetchone()  # fmt: skip
        return row is not None

    async def advance_fence(self, fence: Fence) -> None:
        """Nothing to record: one machine never fences (see the class docstring)."""

    def _notify(self, keys: set[tuple[str, str]]) -> None:
        notify_waiters(self._waiters, self._waiters_lock, keys)
