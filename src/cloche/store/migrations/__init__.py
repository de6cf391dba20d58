"""Versioned schema migrations of the control-plane store, for both engines.

Each version is one module (`vNNN_<what>.py`) with one `up(tx)` written in the SQL both
engines share (see `cloche.store.engine`). The `schema_version` table keeps one row per
applied version, so the database says which code it was made for. A server refuses a
database newer than it knows; an older one it upgrades only when told to (the embedded
SQLite file, which no one else shares, always is): a PostgreSQL database shared by
several replicas is upgraded once, by the operator, with `cloche db upgrade`.

Each migration runs in its own transaction with the upgraders' lock held, and re-reads
the version inside it: two upgraders at once apply every version exactly once, and a
failed migration leaves the database at the version before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cloche.store.engine import Engine, Tx, run_script
from cloche.store.migrations import v001_initial, v002_placements, v003_sandbox_regions


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    up: Callable[[Tx], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, v001_initial.DESCRIPTION, v001_initial.up),
    Migration(2, v002_placements.DESCRIPTION, v002_placements.up),
    Migration(3, v003_sandbox_regions.DESCRIPTION, v003_sandbox_regions.up),
)
LATEST = MIGRATIONS[-1].version

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""


class SchemaMismatch(RuntimeError):
    """The database's schema is not the one this code is written for."""


def _version(tx: Tx) -> int:
    tables = {r[0] for r in tx.execute(tx.dialect.tables_sql).rows}
    if "schema_version" not in tables:
        return 0
    return int(tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").rows[0][0])


def current_version(engine: Engine) -> int:
    """0 for an empty database, and for a file made before versions were recorded (its
    tables are version 1's, which migration 1 recognises and adopts)."""
    with engine.transaction() as tx:
        return _version(tx)


def pending(engine: Engine) -> list[Migration]:
    version = current_version(engine)
    if version > LATEST:
        raise SchemaMismatch(f"the database is at schema version {version}, newer than this cloche knows "
                             f"(version {LATEST}): run the cloche that upgraded it, or a newer one")  # fmt: skip
    return [m for m in MIGRATIONS if m.version > version]


def apply(engine: Engine, migration: Migration) -> bool:
    """Apply one migration; False when another upgrader already had."""
    with engine.transaction() as tx:
        if tx.dialect.migration_lock_sql:
            tx.execute(tx.dialect.migration_lock_sql)
        run_script(tx, VERSION_TABLE)
        if _version(tx) >= migration.version:
            return False
        migration.up(tx)
        tx.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                   (migration.version, migration.description, time.time()))  # fmt: skip
    return True


def ensure(engine: Engine, upgrade: bool) -> None:
    """Bring the database to LATEST when `upgrade`, else refuse any other version."""
    todo = pending(engine)
    if todo and not upgrade:
        raise SchemaMismatch(f"the database is at schema version {todo[0].version - 1}, older than this cloche "
                             f"needs (version {LATEST}): run `cloche db upgrade --database-url URL` first")  # fmt: skip
    for migration in todo:
        apply(engine, migration)
