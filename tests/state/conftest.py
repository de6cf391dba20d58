"""State-engine fixtures: every conformance test runs against SQLite and PostgreSQL.

PostgreSQL comes from CLOCHE_TEST_PG_DSN (the Makefile's `test` target starts a server
with scripts/postgres-test.sh and sets it). Without it the PostgreSQL cases are skipped
on a developer's machine but FAIL under CI=true, so CI can never pass silently without
the second backend.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cloche.state.postgres import PostgresEngine
from cloche.state.sqlite import SqliteEngine
from tests.conftest import mark_offline

BACKENDS = ["sqlite", "postgres"]


def pg_dsn() -> str:
    dsn = os.environ.get("CLOCHE_TEST_PG_DSN", "").strip()
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CLOCHE_TEST_PG_DSN is not set under CI=true: run the tests with `make test`, "
                        "which starts PostgreSQL (scripts/postgres-test.sh)")  # fmt: skip
        pytest.skip("CLOCHE_TEST_PG_DSN is not set (export CLOCHE_TEST_PG_DSN=$(scripts/postgres-test.sh))")
    return dsn


class Backend:
    """Makes engines of one kind; `run(body)` opens one, runs `await body(engine)`, closes it."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.path = tmp / "state.db"
        self.dsn = pg_dsn() if kind == "postgres" else ""

    def make(self, **kw: Any) -> Any:
        if self.kind == "postgres":
            return PostgresEngine(self.dsn, **kw)
        return SqliteEngine(self.path, **kw)

    def run(self, body: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
        async def main() -> Any:
            engine = self.make(**kw)
            await engine.open()
            try:
                return await body(engine)
            finally:
                await engine.close()

        return asyncio.run(main())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


@pytest.fixture()
def tenant() -> str:
    return "tn_" + uuid.uuid4().hex[:16]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The conformance suite drives the engines alone: it runs without the fake internet."""
    mark_offline(items, Path(__file__).parent, but=("test_crash.py", "test_http.py", "test_in_sandbox.py"))
