"""The cluster engine: the store in PostgreSQL, shared by every server replica.

A pool of psycopg 3 connections in autocommit mode: a lone statement commits by itself
(durably: PostgreSQL flushes its WAL at commit by default), a transaction is an explicit
block on one connection. The store's public surface stays synchronous, as with SQLite.

Every wait on the network is bounded, because a replica's event loop makes some of these
calls itself: every connection has `constants.PG_CONNECTION_BOUNDS` (a connection cut off
fails within PG_IO_TIMEOUT_S), and a caller waits at most POOL_WAIT_S for a free one.
Without that, a replica cut off from PostgreSQL by the network waited on one query until
TCP gave up retransmitting (minutes), answering nothing meanwhile, not even a health
check. Any of these failures is :class:`StoreUnavailable` (503 at the API).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from cloche.constants import PG_CONNECTION_BOUNDS
from cloche.store.engine import POSTGRES, Dialect, IntegrityError, Result, Row, StoreUnavailable, where

CONNECT_TIMEOUT_S = 10.0  # for the first connection, at start
POOL_WAIT_S = 5.0
POOL_MAX = 8


_SERVER_GOING = (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)


def _unreachable(exc: psycopg.OperationalError) -> bool:
    """A failure of the connection itself: none answered (no SQLSTATE), a connection
    exception (class 08, which psycopg gives no common class) or the server going down
    under it."""
    return exc.sqlstate is None or exc.sqlstate.startswith("08") or isinstance(exc, _SERVER_GOING)


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
            kwargs={"autocommit": True, "row_factory": _row_factory, **PG_CONNECTION_BOUNDS},
            open=True,
            name="cloche-store",
            timeout=POOL_WAIT_S,
        )
        self._where = where(url)
        try:
            self._pool.wait(timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            self._pool.close()
            raise ConnectionError(f"cannot reach PostgreSQL at {where(url)} "
                                  f"within {CONNECT_TIMEOUT_S:g}s") from None  # fmt: skip

    def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        with self._reachable(), self._pool.connection() as conn:
            return _Tx(conn).execute(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._reachable(), self._pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """PostgreSQL out of reach (no free connection in time, a connection lost, not
        made or ended by a shutdown) as StoreUnavailable; any other error passes as it is."""
        try:
            yield
        except PoolTimeout as exc:
            raise StoreUnavailable(f"PostgreSQL at {self._where}: no connection within {POOL_WAIT_S:g}s") from exc
        except psycopg.OperationalError as exc:
            if not _unreachable(exc):
                raise
            raise StoreUnavailable(f"PostgreSQL at {self._where}: {str(exc).strip() or type(exc).__name__}") from exc

    def close(self) -> None:
        self._pool.close()
