"""The cluster engine: the store in PostgreSQL, shared by every server replica.

A pool of psycopg 3 connections in autocommit mode: a lone statement commits by itself
(durably: PostgreSQL flushes its WAL at commit by default), a transaction is an explicit
block on one connection. The store's public surface stays synchronous, as with SQLite:
callers that must not block an event loop already call it from a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from cloche.store.engine import POSTGRES, Dialect, IntegrityError, Result, Row, where

CONNECT_TIMEOUT_S = 10.0
POOL_MAX = 8


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: Row(names, values)


class _Tx:
    dialect: Dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        try:
            cur = self._conn.execute(POSTGRES.sql(sql), tuple(args))  # type: ignore[arg-type]
        except psycopg.errors.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        return Result(cur.fetchall() if cur.description else [], cur.rowcount)


class PostgresEngine:
    dialect: Dialect = POSTGRES

    def __init__(self, url: str) -> None:
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "row_factory": _row_factory},
            open=True,
            name="cloche-store",
        )
        try:
            self._pool.wait(timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            self._pool.close()
            raise ConnectionError(f"cannot reach PostgreSQL at {where(url)} "
                                  f"within {CONNECT_TIMEOUT_S:g}s") from None  # fmt: skip

    def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        with self._pool.connection() as conn:
            return _Tx(conn).execute(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    def close(self) -> None:
        self._pool.close()
