"""A database URL to an open engine: the one place that knows which URL means which
(the engines import `cloche.store.engine`, so it cannot pick them itself)."""

from __future__ import annotations

from cloche.store.engine import Engine, is_postgres


def open_engine(url: str) -> Engine:
    """`sqlite:///PATH` or `postgresql://...` -> a connected engine."""
    if is_postgres(url):
        from cloche.store.postgres import PostgresEngine

        return PostgresEngine(url)
    if url.startswith("sqlite:///"):
        from cloche.store.sqlite import SqliteEngine

        return SqliteEngine(url)
    raise ValueError(f"database URL must be sqlite:///PATH or postgresql://..., got {url!r}")
