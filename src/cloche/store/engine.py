"""What the control-plane store needs from a database, and the one place the two
dialects differ.

The store's SQL is written once, in the dialect SQLite and PostgreSQL share: `?`
placeholders, `INSERT ... ON CONFLICT ... DO UPDATE`, `RETURNING`, and SQLite's type
names (INTEGER, REAL, TEXT, BLOB). :class:`Dialect` turns that text into each engine's
own: PostgreSQL gets `%s` placeholders, BIGINT for INTEGER (a snapshot's size does not
fit in 32 bits), DOUBLE PRECISION for REAL (PostgreSQL's REAL is 4 bytes: it would round
timestamps to two minutes) and BYTEA for BLOB, plus its catalogue queries and row locks.
Both engines raise :class:`IntegrityError` for a broken constraint, so callers catch
one exception whichever database is behind the store; PostgreSQL out of reach is
:class:`StoreUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit


class IntegrityError(Exception):
    """A write broke a constraint: a name that is taken, a row that already exists,
    a reference to a row that does not."""


class StoreUnavailable(ConnectionError):
    """The database did not answer in time (down, or cut off by the network): the request
    may be tried again; nothing it did was committed unless the database says otherwise."""


class Row(tuple[Any, ...]):
    """A result row readable by position and by column name, and `dict(row)`-able
    (what `sqlite3.Row` offers, for the PostgreSQL engine)."""

    _names: tuple[str, ...]

    def __new__(cls, names: tuple[str, ...], values: Sequence[Any]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


@dataclass(frozen=True)
class Result:
    rows: list[Any]
    rowcount: int


class Tx(Protocol):
    """Statements of one transaction (or, from `Engine.run`, one statement alone)."""

    dialect: Dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result: ...


class Engine(Protocol):
    dialect: Dialect

    def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        """One statement, committed on its own."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """All or nothing: committed when the block ends, rolled back when it raises.
        Writers are serialised against each other for as long as the block runs on
        SQLite; on PostgreSQL, rows read with `dialect.for_update` are locked."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    placeholder: str  # what `?` becomes
    types: tuple[tuple[str, str], ...]  # SQLite type name -> this engine's
    for_update: str  # appended to a SELECT whose rows a transaction will rewrite
    tables_sql: str  # the names of the tables of the store's schema
    columns_sql: str  # the columns of table `?`
    integrity_sql: str | None  # one row whose first column is 'ok' when the file is sound
    migration_lock_sql: str | None  # serialises schema upgraders, held until the transaction ends

    def sql(self, text: str) -> str:
        """The shared SQL of a statement in this engine's words."""
        return _translate(self, text)


@lru_cache(maxsize=512)
def _translate(dialect: Dialect, sql: str) -> str:
    for sqlite_type, own in dialect.types:
        sql = re.sub(rf"\b{sqlite_type}\b", own, sql)
    if dialect.placeholder != "?":
        sql = sql.replace("%", "%%").replace("?", dialect.placeholder)
    return sql


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    types=(),
    for_update="",  # BEGIN IMMEDIATE already holds the write lock
    tables_sql="SELECT name FROM sqlite_master WHERE type='table'",
    columns_sql="SELECT name FROM pragma_table_info(?)",
    integrity_sql="PRAGMA integrity_check",
    migration_lock_sql=None,  # BEGIN IMMEDIATE
)

POSTGRES = Dialect(
    name="postgresql",
    placeholder="%s",
    types=(("INTEGER", "BIGINT"), ("REAL", "DOUBLE PRECISION"), ("BLOB", "BYTEA")),
    for_update=" FOR UPDATE",
    tables_sql="SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    columns_sql="SELECT column_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = ?",
    integrity_sql=None,  # PostgreSQL checks its pages itself (and reports through its log)
    migration_lock_sql="SELECT pg_advisory_xact_lock(7330155)",  # any constant: the upgraders' lock
)


def run_script(tx: Tx, script: str) -> None:
    """Several `;`-separated statements (DDL; no `;` inside a literal), one by one, so
    that the script is part of the transaction around it (sqlite3's executescript
    would COMMIT it first)."""
    for statement in script.split(";"):
        if statement.strip():
            tx.execute(statement)


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path` and `sqlite:////abs/path` (SQLAlchemy's spelling) -> the path."""
    return url.removeprefix("sqlite:///")


def where(url: str) -> str:
    """A database URL fit to print: the SQLite file's path, or the PostgreSQL URL
    without its password."""
    if not is_postgres(url):
        return sqlite_path(url)
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))
