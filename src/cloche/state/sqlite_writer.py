"""The SQLite state engine's group-commit writer: one thread that commits many writes at once.

Why it exists: a durable write costs an fsync, and SQLite has one writer at a time. So
`SqliteEngine` hands every write to this one writer thread through a queue. The writer
runs a request as soon as it takes it, and every request that arrives meanwhile (up to
`max_group`) joins the same transaction; it commits once none is waiting (or at
`max_group`), so concurrent writers share a single fsync, and the statements overlap the
event loop handing over the next requests. A request that fails (a condition, a bad op
in a batch) is rolled back to its own SAVEPOINT without touching the others. Nobody is
answered before the commit that holds their write returns, so every acknowledged write
is durable. The writes themselves are in state/sqlite_writes.py.
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
from typing import Any

from cloche.state.engine import OpsCounter, Unavailable

EXPIRY_SWEEP_S = 30.0
# The writer thread lets the GIL go around every SQLite call and must take it back from a
# busy event loop, which CPython lets keep it for the switch interval (5 ms by default):
# a group of N statements could wait N x 5 ms. A shorter interval (process-wide) bounds
# that; PUT /kv through HTTP: +40 % puts/s, p99 down by a third in A/B runs.
SWITCH_INTERVAL_S = 0.0005
Keys = set[tuple[str, str]]  # (tenant, namespace) pairs whose log grew
# Versions the writer last wrote, kept as hints for unconditional puts (see
# sqlite_writes.put_any); forgotten all at once past this many keys.
KNOWN_VERSIONS_MAX = 65_536


class _Request:
    __slots__ = ("fn", "args", "loop", "fut", "multi", "result", "error", "notify")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
                 fut: asyncio.Future[Any], multi: bool, notify: tuple[str, str] | None = None) -> None:  # fmt: skip
        self.fn = fn
        self.args = args
        self.loop = loop
        self.fut = fut
        self.multi = multi
        self.result: Any = None
        self.error: BaseException | None = None
        self.notify = notify


def _resolve(reqs: list[_Request]) -> None:
    for r in reqs:
        if r.fut.done():
            continue
        if r.error is not None:
            r.fut.set_exception(r.error)
        else:
            r.fut.set_result(r.result)


class GroupWriter:
    """The writer thread on `db`. Each write is `fn(writer, db, *args)`; `ns_ids` (tenant,
    namespace) -> id is shared with the engine's readers and grows as a group commits;
    `on_commit` gets the namespaces whose log an acknowledged write appended to; `sweep`
    turns expired values into tombstones."""

    def __init__(self, db: sqlite3.Connection, max_group: int, stats: OpsCounter, ns_ids: dict[tuple[str, str], int],
                 on_commit: Callable[[Keys], None], sweep: Callable[..., int]) -> None:  # fmt: skip
        self.db = db
        self.max_group = max_group
        self.stats = stats
        self.ns_ids = ns_ids
        self._new_ns: dict[tuple[str, str], int] = {}
        self.known_versions: dict[tuple[int, str], int] = {}  # (namespace id, key) -> version
        self._on_commit = on_commit
        self._sweep = sweep  # run every EXPIRY_SWEEP_S in a group of its own or with others
        self._q: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cloche-state-writer", daemon=True)

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread.start()

    async def close(self) -> None:
        """Stop after the writes queued so far, and close the connection."""
        self._q.put(None)
        await asyncio.to_thread(self._thread.join)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], multi: bool,
               notify: tuple[str, str] | None) -> asyncio.Future[Any]:  # fmt: skip
        """Queue `fn(writer, db, *args)`; the future resolves once its group is durable."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put(_Request(fn, args, loop, fut, multi, notify))
        return fut

    def _run(self) -> None:
        db = self.db
        next_sweep = time.monotonic() + EXPIRY_SWEEP_S
        stop = False
        while not stop:
            try:
                first = self._q.get(timeout=max(0.1, next_sweep - time.monotonic()))
            except queue.Empty:
                first = _Request(self._sweep, (), None, None, False)  # type: ignore[arg-type]
            if first is None:
                break
            sweep = False
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + EXPIRY_SWEEP_S
                sweep = first.fut is not None  # else `first` is the sweep
            stop = self._run_group(db, first, sweep)
        db.close()

    def _apply(self, db: sqlite3.Connection, r: _Request) -> BaseException | None:
        """Run one request in the open transaction; the error that ended the transaction, if any.

        A request of several writes runs in a savepoint: when it fails, its writes are rolled
        back, and so are the namespaces it created, in the ids the writer remembers."""
        created = dict(self._new_ns) if r.multi else self._new_ns
        try:
            if r.multi:
                db.execute("SAVEPOINT req")
            r.result = r.fn(self, db, *r.args)
            if r.multi:
                db.execute("RELEASE req")
        except Exception as e:  # a condition, or a failing statement
            r.error = e
            if not db.in_transaction:  # SQLite rolled the whole transaction back
                return e
            if r.multi:
                self._new_ns = created
                try:
                    db.execute("ROLLBACK TO req")
                    db.execute("RELEASE req")
                except sqlite3.Error as failed:  # the transaction is in an unknown state: fail it
                    return failed
        return None

    def _run_group(self, db: sqlite3.Connection, first: _Request, sweep: bool) -> bool:
        """Run `first`, then every request that arrived meanwhile (up to `max_group`), in one
        transaction; commit once and answer them all. Each request runs as soon as it is
        taken, so the statements overlap the event loop handing over the next requests.
        True when the stop marker was taken."""
        self._new_ns = {}
        group = [first]
        stop = False
        failure: BaseException | None = None
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            failure = e
        if failure is None:
            r = first
            while True:
                failure = self._apply(db, r)
                if failure is not None or len(group) >= self.max_group:
                    break
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(r := nxt)
            if failure is None and sweep:
                group.append(_Request(self._sweep, (), None, None, False))  # type: ignore[arg-type]
                failure = self._apply(db, group[-1])
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
            self.ns_ids.update(self._new_ns)
        self.stats.commits += 1
        self.stats.requests += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        notify: Keys = set()
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
            self._on_commit(notify)
        return stop

    def know_version(self, nid: int, key: str, version: int) -> None:
        """Remember the version this writer just gave key: a hint, never trusted unchecked."""
        if len(self.known_versions) >= KNOWN_VERSIONS_MAX:
            self.known_versions.clear()
        self.known_versions[(nid, key)] = version

    def ns_id(self, db: sqlite3.Connection, tenant: str, ns: str, create: bool) -> int | None:
        """The namespace id on the writer's connection, created on first write."""
        k = (tenant, ns)
        nid = self.ns_ids.get(k) or self._new_ns.get(k)
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
