"""The embedded engine: the store in one SQLite file on this machine.

One connection behind a lock (SQLite serialises writers anyway), WAL so readers never
wait for the writer, and synchronous=FULL so an acknowledged write survives a crash or
a power loss. Transactions take the write lock up front (BEGIN IMMEDIATE): a
read-then-write inside one can never be overtaken by another writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloche.store.engine import SQLITE, Dialect, IntegrityError, Result, sqlite_path


class _Tx:
    dialect: Dialect = SQLITE

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        try:
            cur = self._db.execute(sql, tuple(args))
            return Result(cur.fetchall(), cur.rowcount)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


class SqliteEngine:
    dialect: Dialect = SQLITE

    def __init__(self, url: str) -> None:
        path = Path(sqlite_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._tx = _Tx(self._db)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")

    def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        with self._lock:
            return self._tx.execute(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
