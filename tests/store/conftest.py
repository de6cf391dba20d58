"""Store fixtures: every test runs against the embedded SQLite file and PostgreSQL.

PostgreSQL is CLOCHE_TEST_PG_DSN, as for the state engines (`tests.state.conftest.pg_dsn`:
skipped without it on a developer's machine, FAILED under CI=true); each test gets a
fresh schema of its own (the URL's search_path), dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from cloche.store.db import Store
from tests.conftest import mark_offline
from tests.state.conftest import pg_dsn

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the engine under test, as a URL."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloche.db'}"
        return
    dsn, schema = pg_dsn(), "store_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture()
def open_store(database_url: str) -> Iterator[Callable[..., Store]]:
    """`open_store(upgrade=...)` opens a Store on the test's database; all are closed after."""
    opened: list[Store] = []

    def make(upgrade: bool | None = True) -> Store:
        opened.append(Store(database_url, upgrade=upgrade))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture()
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """These tests drive the store and databases alone: no fake internet to wait for."""
    mark_offline(items, Path(__file__).parent)
