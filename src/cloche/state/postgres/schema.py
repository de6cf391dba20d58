"""The PostgreSQL state engine's tables (all prefixed `state_`), created on open.

Several servers may open the same database at once, so the schema is created under an
advisory lock, idempotently. The fencing table (`instance_fences`, owned by
cloche.cluster.pgfence) is created with them: fenced writes check it in their transaction.
"""

from __future__ import annotations

from typing import Any

from cloche.cluster import pgfence

SCHEMA = """
CREATE TABLE IF NOT EXISTS state_namespaces (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    log_next BIGINT NOT NULL DEFAULT 1,
    log_first BIGINT NOT NULL DEFAULT 1,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS state_kv (
    ns_id BIGINT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value BYTEA,
    version BIGINT NOT NULL,
    expires_at DOUBLE PRECISION,
    PRIMARY KEY (ns_id, key)
);
CREATE INDEX IF NOT EXISTS state_kv_expiry ON state_kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS state_log (
    ns_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (ns_id, seq)
);
CREATE TABLE IF NOT EXISTS state_grants (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, name, sandbox_id)
);
CREATE TABLE IF NOT EXISTS state_log_idem (
    ns_id BIGINT NOT NULL,
    idem_key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (ns_id, idem_key)
);
"""
SCHEMA_LOCK = 0x636C6F636865  # advisory lock id while creating the schema


async def create_schema(conn: Any) -> None:
    """Create the tables that do not exist yet (autocommit connection)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        await conn.execute(SCHEMA)
        await pgfence.create_table(conn)
