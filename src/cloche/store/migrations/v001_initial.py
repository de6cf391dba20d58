"""Version 1: the schema as it stood when versions began to be recorded.

Every statement is idempotent (`IF NOT EXISTS`, columns added only when missing), so
on a SQLite file made by the code before migrations it changes nothing and adopts the
file as version 1. The two tenant columns came after the first release, which is why
they are added rather than declared: a file from before them gets them here.
"""

from __future__ import annotations

from cloche.store.engine import Tx, run_script

DESCRIPTION = "tenants, keys, sandboxes, apps, agents, snapshots, secrets"

SCHEMA = """
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
)
"""

TENANT_COLUMNS = (
    ("priority", "INTEGER NOT NULL DEFAULT 0"),  # scheduling priority
    ("isolation", "TEXT NOT NULL DEFAULT ''"),  # comma-separated allow-list; '' allows every tier
)


def up(tx: Tx) -> None:
    run_script(tx, SCHEMA)
    have = {r[0] for r in tx.execute(tx.dialect.columns_sql, ("tenants",)).rows}
    for column, declaration in TENANT_COLUMNS:
        if column not in have:
            tx.execute(f"ALTER TABLE tenants ADD COLUMN {column} {declaration}")
