"""Schema versions: a fresh database on either engine, a SQLite file made before
versions were recorded, a database newer than the code, and PostgreSQL refusing an
old schema until the operator upgrades it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from cloche.store import migrations
from cloche.store.connect import open_engine
from cloche.store.db import SandboxRow, Store

# The schema exactly as `store/db.py` created it before migrations (commit 5cf051e):
# a file made by that code is what an upgrading embedded server finds on disk.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0,
    max_sandboxes INTEGER NOT NULL,
    max_cpu REAL NOT NULL,
    max_memory_mb INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT,
    template TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    disk_mb INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS apps (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS agents (
    tenant_id TEXT NOT NULL,
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    app_version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, app, key)
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    template TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS secrets (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    hosts TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""
# What that code's `_migrate` added at every start since the first release.
OLD_COLUMNS = (
    "ALTER TABLE tenants ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE tenants ADD COLUMN isolation TEXT NOT NULL DEFAULT ''",
)

TABLES = {"tenants", "api_keys", "sandboxes", "apps", "agents", "snapshots", "secrets", "placements", "schema_version"}
ALL = [m.version for m in migrations.MIGRATIONS]


def old_file(path: Path, columns: tuple[str, ...]) -> None:
    """A control-plane file as the old code left it, with a tenant, its key and a sandbox."""
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(OLD_SCHEMA)
        for alter in columns:
            db.execute(alter)
        db.execute("INSERT INTO tenants (id, name, is_admin, max_sandboxes, max_cpu, max_memory_mb, created_at)"
                   " VALUES ('tn_old', 'acme', 1, 5, 2.0, 1024, 1.25)")  # fmt: skip
        db.execute("INSERT INTO api_keys VALUES ('key_old', 'tn_old', ?, 1.0, NULL)",
                   ("d2e16e6ef52a45b7468f1da56bba1953e4d0a7a0f2d2e3b3c2e1e3a6b1c1a0f0",))  # fmt: skip
        db.execute("INSERT INTO sandboxes VALUES ('sb_old', 'tn_old', 'web', 'base', 1.0, 256, 1024, '{}', 2.0)")


def rows(url: str, sql: str) -> list[object]:
    engine = open_engine(url)
    try:
        return [r[0] for r in engine.run(sql.replace("TABLES", engine.dialect.tables_sql)).rows]
    finally:
        engine.close()


def versions(url: str) -> list[object]:
    return rows(url, "SELECT version FROM schema_version ORDER BY version")


def test_fresh_install_is_at_the_latest_version(open_store: Callable[..., Store], database_url: str) -> None:
    open_store(upgrade=True).close()
    assert set(rows(database_url, "TABLES")) >= TABLES
    assert versions(database_url) == [m.version for m in migrations.MIGRATIONS]
    open_store(upgrade=False)  # up to date: nothing to refuse


def test_postgres_refuses_an_old_schema_until_upgraded(
    engine: str, open_store: Callable[..., Store], database_url: str
) -> None:
    if engine == "sqlite":
        open_store()  # the embedded file upgrades itself by default
        assert versions(database_url) == ALL
        return
    with pytest.raises(migrations.SchemaMismatch, match=rf"version 0, older .* \(version {migrations.LATEST}\)"
                       r".*cloche db upgrade"):  # fmt: skip
        open_store(upgrade=None)
    open_store(upgrade=True)
    open_store(upgrade=None)


def test_a_newer_database_is_refused(open_store: Callable[..., Store], database_url: str) -> None:
    open_store().query("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (migrations.LATEST + 1,))
    newer = rf"version {migrations.LATEST + 1}, newer than this cloche knows \(version {migrations.LATEST}\)"
    for upgrade in (None, True, False):
        with pytest.raises(migrations.SchemaMismatch, match=newer):
            open_store(upgrade=upgrade)


@pytest.mark.parametrize("columns", [OLD_COLUMNS, ()], ids=["current", "first-release"])
def test_a_file_made_before_versions_upgrades_keeping_its_records(tmp_path: Path, columns: tuple[str, ...]) -> None:
    path = tmp_path / "cloche.db"
    old_file(path, columns)
    store = Store(path)
    try:
        assert versions(f"sqlite:///{path}") == ALL  # adopted as version 1, then upgraded
        tenant = store.tenant("tn_old")
        assert tenant is not None and (tenant.name, tenant.is_admin, tenant.priority, tenant.isolation) == (
            "acme", True, 0, ())  # fmt: skip
        assert store.sandbox_by_name("tn_old", "web").id == "sb_old"  # type: ignore[union-attr]
        _, key = store.add_key("tn_old")
        assert store.authenticate(key) == tenant
        store.add_sandbox(SandboxRow("sb_new", "tn_old", "api", "base", 1.0, 256, 1024, {}, 3.0))
        assert store.integrity_ok()
    finally:
        store.close()
    Store(path).close()  # and opens again without applying anything twice
    assert versions(f"sqlite:///{path}") == ALL


def test_racing_upgraders_apply_each_version_once(database_url: str) -> None:
    engines = [open_engine(database_url) for _ in range(4)]
    applied: list[bool] = []
    start = threading.Barrier(len(engines))

    def upgrade(engine: object) -> None:
        start.wait()
        applied.extend(migrations.apply(engine, m) for m in migrations.MIGRATIONS)  # type: ignore[arg-type]

    threads = [threading.Thread(target=upgrade, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.close()
    assert applied.count(True) == len(migrations.MIGRATIONS)
    assert versions(database_url) == [m.version for m in migrations.MIGRATIONS]
