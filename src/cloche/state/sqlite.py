"""The embedded state engine: one SQLite file (WAL, synchronous=FULL) with group commit.

Writes go to one writer thread through a queue. The writer takes every request that is
waiting (up to `max_group`), runs them in ONE transaction and commits once, so
concurrent writers share a single fsync; a request's conditions are checked inside that
transaction, and a request that fails (a condition, a bad op in a batch) is rolled back
to its own SAVEPOINT without touching the others. Nobody is answered before the commit
that holds their write returns, so every acknowledged write is durable.

Reads run inline on the caller's thread on a connection of their own (WAL readers never
wait for the writer), so a point read costs a few microseconds and no thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloche.state._wait import Waiters, notify_waiters, wait_for_entries
from cloche.state.engine import (
    READ_LOG_BYTES,
    Appended,
    Conflict,
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
    conflict_of,
    prefix_bounds,
    validate_batch,
)

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

# A live value: not a tombstone and not expired (?1 = now).
LIVE = "value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)"
PUT_ANY = (
    "INSERT INTO kv (ns_id, key, value, version, expires_at) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = excluded.value, version = kv.version + 1, "
    "expires_at = excluded.expires_at RETURNING version"
)
PUT_ABSENT = (
    "INSERT INTO kv (ns_id, key, value, version, expires_at) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = excluded.value, version = kv.version + 1, "
    "expires_at = excluded.expires_at "
    "WHERE kv.value IS NULL OR (kv.expires_at IS NOT NULL AND kv.expires_at <= ?) RETURNING version"
)
PUT_MATCH = (
    "UPDATE kv SET value = ?, version = version + 1, expires_at = ? "
    f"WHERE ns_id = ? AND key = ? AND version = ? AND {LIVE} RETURNING version"
)
DELETE_ANY = (
    "UPDATE kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = ? AND key = ? AND {LIVE} RETURNING version"
)
DELETE_MATCH = (
    "UPDATE kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = ? AND key = ? AND version = ? AND {LIVE} RETURNING version"
)
CURRENT = f"SELECT version, {LIVE} FROM kv WHERE ns_id = ? AND key = ?"
EXPIRY_SWEEP_S = 30.0
# The writer thread lets the GIL go around every SQLite call and must take it back from a
# busy event loop, which CPython lets keep it for the switch interval (5 ms by default):
# a group of N statements could wait N x 5 ms. A shorter interval (process-wide) bounds
# that; PUT /kv through HTTP: +40 % puts/s, p99 down by a third in A/B runs.
SWITCH_INTERVAL_S = 0.0005


class _Request:
    __slots__ = ("fn", "args", "loop", "fut", "multi", "result", "error", "notify")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
                 fut: asyncio.Future[Any], multi: bool) -> None:  # fmt: skip
        self.fn = fn
        self.args = args
        self.loop = loop
        self.fut = fut
        self.multi = multi
        self.result: Any = None
        self.error: BaseException | None = None
        self.notify: tuple[str, str] | None = None


def _resolve(reqs: list[_Request]) -> None:
    for r in reqs:
        if r.fut.done():
            continue
        if r.error is not None:
            r.fut.set_exception(r.error)
        else:
            r.fut.set_result(r.result)


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
        self._q: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
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
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        self._wdb = db
        self._thread = threading.Thread(target=self._writer, name="cloche-state-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._q.put(None)
        await asyncio.to_thread(self._thread.join)
        with self._readers_lock:
            for db in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._readers.clear()

    def integrity_ok(self) -> bool:
        return self._reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ---- the writer thread -------------------------------------------------------------

    async def _write(self, fn: Callable[..., Any], *args: Any, multi: bool = False,
                     notify: tuple[str, str] | None = None) -> Any:  # fmt: skip
        if self._closed or self._thread is None:
            raise RuntimeError("state engine is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        req = _Request(fn, args, loop, fut, multi)
        req.notify = notify
        self._q.put(req)
        return await fut

    def _writer(self) -> None:
        db = self._wdb
        next_sweep = time.monotonic() + EXPIRY_SWEEP_S
        stop = False
        while not stop:
            try:
                first = self._q.get(timeout=max(0.1, next_sweep - time.monotonic()))
            except queue.Empty:
                first = _Request(_sweep_expired, (), None, None, False)  # type: ignore[arg-type]
            if first is None:
                break
            group = [first]
            while len(group) < self.max_group:
                try:
                    r = self._q.get_nowait()
                except queue.Empty:
                    break
                if r is None:
                    stop = True
                    break
                group.append(r)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + EXPIRY_SWEEP_S
                if first.fut is not None:
                    group.append(_Request(_sweep_expired, (), None, None, False))  # type: ignore[arg-type]
            self._run_group(db, group)
        db.close()

    def _run_group(self, db: sqlite3.Connection, group: list[_Request]) -> None:
        self._new_ns: dict[tuple[str, str], int] = {}
        failure: BaseException | None = None
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            failure = e
        if failure is None:
            for r in group:
                if r.multi:
                    db.execute("SAVEPOINT req")
                try:
                    r.result = r.fn(self, db, *r.args)
                    if r.multi:
                        db.execute("RELEASE req")
                except Exception as e:  # a condition, or a failing statement
                    r.error = e
                    if not db.in_transaction:  # SQLite rolled the whole transaction back
                        failure = e
                        break
                    if r.multi:
                        db.execute("ROLLBACK TO req")
                        db.execute("RELEASE req")
            if failure is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as e:
                    failure = e
        if failure is not None:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            for r in group:
                if r.error is None:
                    r.error = Unavailable(f"state store write failed: {failure}")
            self._new_ns.clear()
        else:
            self._ns_ids.update(self._new_ns)
        self.stats.commits += 1
        self.stats.requests += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        notify: set[tuple[str, str]] = set()
        for r in group:
            if r.fut is None:
                continue
            by_loop.setdefault(r.loop, []).append(r)
            if r.notify and r.error is None:
                notify.add(r.notify)
        for loop, reqs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, reqs)
        if notify:
            self._notify(notify)

    def _ns_w(self, db: sqlite3.Connection, tenant: str, ns: str, create: bool) -> int | None:
        """The namespace id on the writer's connection, created on first write."""
        k = (tenant, ns)
        nid = self._ns_ids.get(k) or self._new_ns.get(k)
        if nid is not None:
            return nid
        row = db.execute("SELECT id FROM namespaces WHERE tenant_id = ? AND name = ?", k).fetchone()
        if row is None:
            if not create:
                return None
            row = db.execute("INSERT INTO namespaces (tenant_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
                             (tenant, ns, time.time())).fetchone()  # fmt: skip
        self._new_ns[k] = row[0]
        return row[0]

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
            return await self._write(_put_any, tenant, ns, key, value)
        return await self._write(_put, tenant, ns, Op("put", key, value, if_match, if_none_match, ttl_s), None)

    async def kv_delete(self, tenant: str, ns: str, key: str, *, if_match: int | None = None,
                        fence: Fence | None = None) -> bool:  # fmt: skip
        check_ns(ns, self.limits)
        check_key(key, self.limits)
        check_conditions(if_match, False)
        return await self._write(_delete, tenant, ns, Op("delete", key, if_match=if_match), None) is not None

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
        return await self._write(_batch, tenant, ns, ops, multi=True)

    # ---- log -----------------------------------------------------------------------------

    async def log_append(self, tenant: str, ns: str, data: bytes, idempotency_key: str | None = None, *,
                         fence: Fence | None = None) -> Appended:  # fmt: skip
        check_ns(ns, self.limits)
        check_log(data, idempotency_key, self.limits)
        return await self._write(_append, tenant, ns, bytes(data), idempotency_key, multi=True, notify=(tenant, ns))

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
        return await self._write(_trim, tenant, ns, upto, multi=True)

    # ---- grants ----------------------------------------------------------------------------

    async def grant(self, tenant: str, ns: str, sandbox_id: str) -> None:
        check_ns(ns, self.limits)
        check_sandbox_id(sandbox_id)
        await self._write(_grant, tenant, ns, sandbox_id)

    async def revoke(self, tenant: str, ns: str, sandbox_id: str) -> bool:
        check_ns(ns, self.limits)
        return await self._write(_revoke, tenant, ns, sandbox_id)

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


# ---- write operations (run on the writer thread, inside the group's transaction) --------


def _current(db: sqlite3.Connection, nid: int, key: str, now: float) -> int | None:
    """The live version of key, or None when absent (never written, deleted, expired)."""
    row = db.execute(CURRENT, (now, nid, key)).fetchone()
    return row[0] if row and row[1] else None


def _conflict(db: sqlite3.Connection, nid: int | None, op: Op, now: float, index: int | None) -> Conflict:
    return conflict_of(op, _current(db, nid, op.key, now) if nid is not None else None, index)


def _put(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, op: Op, index: int | None) -> int:
    now = time.time()
    expires = now + op.ttl_s if op.ttl_s else None
    if op.if_match is not None:
        nid = eng._ns_w(db, tenant, ns, create=False)
        rows = db.execute(PUT_MATCH, (op.value, expires, nid, op.key, op.if_match, now)).fetchall() if nid else []
    else:
        nid = eng._ns_w(db, tenant, ns, create=True)
        if op.if_none_match:
            rows = db.execute(PUT_ABSENT, (nid, op.key, op.value, expires, now)).fetchall()
        else:
            rows = db.execute(PUT_ANY, (nid, op.key, op.value, expires)).fetchall()
    if not rows:
        raise _conflict(db, nid, op, now, index)
    return rows[0][0]


def _put_any(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, key: str, value: bytes) -> int:
    nid = eng._ns_ids.get((tenant, ns)) or eng._ns_w(db, tenant, ns, create=True)
    return db.execute(PUT_ANY, (nid, key, value, None)).fetchall()[0][0]


def _delete(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, op: Op,
            index: int | None) -> int | None:  # fmt: skip
    """The tombstone's version, or None when the key was already absent."""
    now = time.time()
    nid = eng._ns_w(db, tenant, ns, create=False)
    if nid is None:
        rows = []
    elif op.if_match is not None:
        rows = db.execute(DELETE_MATCH, (nid, op.key, op.if_match, now)).fetchall()
    else:
        rows = db.execute(DELETE_ANY, (nid, op.key, now)).fetchall()
    if not rows and op.if_match is not None:
        raise _conflict(db, nid, op, now, index)
    return rows[0][0] if rows else None


def _check(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, op: Op, index: int) -> int | None:
    now = time.time()
    nid = eng._ns_w(db, tenant, ns, create=False)
    current = _current(db, nid, op.key, now) if nid is not None else None
    if (op.if_none_match and current is not None) or (op.if_match is not None and current != op.if_match):
        raise _conflict(db, nid, op, now, index)
    return current


def _batch(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, ops: list[Op]) -> list[OpResult]:
    results = []
    for i, op in enumerate(ops):
        if op.op == "put":
            results.append(OpResult("put", op.key, _put(eng, db, tenant, ns, op, i)))
        elif op.op == "delete":
            v = _delete(eng, db, tenant, ns, op, i)
            results.append(OpResult("delete", op.key, v, v is not None))
        else:
            v = _check(eng, db, tenant, ns, op, i)
            results.append(OpResult("check", op.key, v, v is not None))
    return results


def _append(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, data: bytes,
            idem: str | None) -> Appended:  # fmt: skip
    nid = eng._ns_w(db, tenant, ns, create=True)
    now = time.time()
    if idem is not None:
        row = db.execute("SELECT seq FROM log_idem WHERE ns_id = ? AND idem_key = ?", (nid, idem)).fetchone()
        if row:
            return Appended(row[0], replayed=True)
    (seq,) = db.execute("UPDATE namespaces SET log_next = log_next + 1 WHERE id = ? RETURNING log_next - 1",
                        (nid,)).fetchone()  # fmt: skip
    db.execute("INSERT INTO log (ns_id, seq, data, created_at) VALUES (?, ?, ?, ?)", (nid, seq, data, now))
    if idem is not None:
        db.execute("INSERT INTO log_idem (ns_id, idem_key, seq, created_at) VALUES (?, ?, ?, ?)",
                   (nid, idem, seq, now))  # fmt: skip
    return Appended(seq)


def _trim(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, upto: int) -> int:
    nid = eng._ns_w(db, tenant, ns, create=False)
    if nid is None:
        return 1
    log_next, log_first = db.execute("SELECT log_next, log_first FROM namespaces WHERE id = ?", (nid,)).fetchone()
    upto = min(upto, log_next - 1)
    if upto >= log_first:
        db.execute("DELETE FROM log WHERE ns_id = ? AND seq <= ?", (nid, upto))
        db.execute("UPDATE namespaces SET log_first = ? WHERE id = ?", (upto + 1, nid))
        return upto + 1
    return log_first


def _grant(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, sandbox_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO grants (tenant_id, name, sandbox_id, created_at) VALUES (?, ?, ?, ?)",
               (tenant, ns, sandbox_id, time.time()))  # fmt: skip


def _revoke(eng: SqliteEngine, db: sqlite3.Connection, tenant: str, ns: str, sandbox_id: str) -> bool:
    cur = db.execute("DELETE FROM grants WHERE tenant_id = ? AND name = ? AND sandbox_id = ?", (tenant, ns, sandbox_id))
    return cur.rowcount > 0


def _sweep_expired(eng: SqliteEngine, db: sqlite3.Connection) -> int:
    """Expired values become tombstones (their space is freed; the version lives on)."""
    cur = db.execute("UPDATE kv SET value = NULL, expires_at = NULL WHERE expires_at IS NOT NULL AND expires_at <= ?",
                     (time.time(),))  # fmt: skip
    return cur.rowcount
