"""Control-plane records in SQLite (WAL, synchronous=FULL: an acknowledged write
survives a crash or power loss). API keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
);
"""


@dataclass
class Tenant:
    id: str
    name: str
    is_admin: bool
    max_sandboxes: int
    max_cpu: float
    max_memory_mb: int
    created_at: float
    priority: int = 0  # scheduling priority: higher is admitted first and preempted last
    isolation: tuple[str, ...] = ()  # the isolation tiers its sandboxes may use (empty: any)


@dataclass
class SandboxRow:
    id: str
    tenant_id: str
    name: str | None
    template: str
    cpu: float
    memory_mb: int
    disk_mb: int
    metadata: dict[str, str]
    created_at: float


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "ck_" + secrets.token_urlsafe(32)


class Store:
    """Thread-safe access to the control-plane database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Columns added after the first release (the caller holds the lock)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(tenants)").fetchall()}
        if "priority" not in columns:
            self._db.execute("ALTER TABLE tenants ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
        if "isolation" not in columns:  # comma-separated allow-list; '' allows every tier
            self._db.execute("ALTER TABLE tenants ADD COLUMN isolation TEXT NOT NULL DEFAULT ''")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One statement on this connection, for a table an API layer keeps beside these
        (E2B's per-sandbox tokens: `e2b/store.py`)."""
        return self._q(sql, args)

    def add_schema(self, script: str) -> None:
        with self._lock:
            self._db.executescript(script)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def integrity_ok(self) -> bool:
        return self._q("PRAGMA integrity_check")[0][0] == "ok"

    # ---- tenants and keys -----------------------------------------------------

    def create_tenant(self, name: str, max_sandboxes: int, max_cpu: float, max_memory_mb: int,
                      is_admin: bool = False, priority: int = 0,
                      isolation: tuple[str, ...] = ()) -> tuple[Tenant, str, str]:  # fmt: skip
        """Create a tenant with its first key. Returns (tenant, key id, key)."""
        tenant = Tenant("tn_" + secrets.token_hex(8), name, is_admin, max_sandboxes, max_cpu,
                        max_memory_mb, time.time(), priority, isolation)  # fmt: skip
        key_id, key = "key_" + secrets.token_hex(8), new_key()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO tenants (id, name, is_admin, max_sandboxes, max_cpu, max_memory_mb, created_at,"
                    " priority, isolation) VALUES (?,?,?,?,?,?,?,?,?)",
                    (tenant.id, name, int(is_admin), max_sandboxes, max_cpu, max_memory_mb,
                     tenant.created_at, priority, ",".join(isolation)),  # fmt: skip
                )
                self._db.execute("INSERT INTO api_keys VALUES (?,?,?,?,NULL)",
                                 (key_id, tenant.id, hash_key(key), time.time()))  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return tenant, key_id, key

    def tenant_by_name(self, name: str) -> Tenant | None:
        rows = self._q("SELECT * FROM tenants WHERE name=?", (name,))
        return _tenant(rows[0]) if rows else None

    def tenant(self, tenant_id: str) -> Tenant | None:
        rows = self._q("SELECT * FROM tenants WHERE id=?", (tenant_id,))
        return _tenant(rows[0]) if rows else None

    def tenants(self) -> list[Tenant]:
        return [_tenant(r) for r in self._q("SELECT * FROM tenants ORDER BY created_at")]

    def set_priority(self, tenant_id: str, priority: int) -> bool:
        with self._lock:
            return self._db.execute("UPDATE tenants SET priority=? WHERE id=?", (priority, tenant_id)).rowcount == 1

    def add_key(self, tenant_id: str) -> tuple[str, str]:
        key_id, key = "key_" + secrets.token_hex(8), new_key()
        self._q("INSERT INTO api_keys VALUES (?,?,?,?,NULL)",
                (key_id, tenant_id, hash_key(key), time.time()))  # fmt: skip
        return key_id, key

    def revoke_key(self, tenant_id: str, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE id=? AND tenant_id=? AND revoked_at IS NULL",
                (time.time(), key_id, tenant_id),
            )
            return cur.rowcount == 1

    def authenticate(self, key: str) -> Tenant | None:
        rows = self._q(
            "SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE k.key_hash=? AND k.revoked_at IS NULL",
            (hash_key(key),),
        )
        return _tenant(rows[0]) if rows else None

    # ---- sandboxes ------------------------------------------------------------

    def add_sandbox(self, row: SandboxRow) -> None:
        self._q(
            "INSERT INTO sandboxes VALUES (?,?,?,?,?,?,?,?,?)",
            (row.id, row.tenant_id, row.name, row.template, row.cpu, row.memory_mb, row.disk_mb,
             json.dumps(row.metadata), row.created_at),  # fmt: skip
        )

    def sandbox(self, sandbox_id: str) -> SandboxRow | None:
        rows = self._q("SELECT * FROM sandboxes WHERE id=?", (sandbox_id,))
        return _sandbox(rows[0]) if rows else None

    def sandbox_by_name(self, tenant_id: str, name: str) -> SandboxRow | None:
        rows = self._q("SELECT * FROM sandboxes WHERE tenant_id=? AND name=?", (tenant_id, name))
        return _sandbox(rows[0]) if rows else None

    def sandboxes(self, tenant_id: str | None = None) -> list[SandboxRow]:
        if tenant_id is None:
            return [_sandbox(r) for r in self._q("SELECT * FROM sandboxes ORDER BY created_at")]
        rows = self._q("SELECT * FROM sandboxes WHERE tenant_id=? ORDER BY created_at", (tenant_id,))
        return [_sandbox(r) for r in rows]

    def update_limits(self, sandbox_id: str, cpu: float, memory_mb: int) -> None:
        self._q("UPDATE sandboxes SET cpu=?, memory_mb=? WHERE id=?", (cpu, memory_mb, sandbox_id))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._q("DELETE FROM sandboxes WHERE id=?", (sandbox_id,))

    # ---- apps and agents --------------------------------------------------------

    def put_app(self, tenant_id: str, name: str, spec: dict[str, Any]) -> AppRow:
        """Create or redeploy an app; every deploy gets the next version."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version, created_at FROM apps WHERE tenant_id=? AND name=?",
                                       (tenant_id, name)).fetchone()  # fmt: skip
                version, created = (row[0] + 1, row[1]) if row else (1, now)
                self._db.execute("INSERT OR REPLACE INTO apps VALUES (?,?,?,?,?,?)",
                                 (tenant_id, name, version, json.dumps(spec), created, now))  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return AppRow(tenant_id, name, version, spec, created, now)

    def app(self, tenant_id: str, name: str) -> AppRow | None:
        rows = self._q("SELECT * FROM apps WHERE tenant_id=? AND name=?", (tenant_id, name))
        return _app(rows[0]) if rows else None

    def apps(self, tenant_id: str) -> list[AppRow]:
        return [_app(r) for r in self._q("SELECT * FROM apps WHERE tenant_id=? ORDER BY name", (tenant_id,))]

    def delete_app(self, tenant_id: str, name: str) -> None:
        self._q("DELETE FROM apps WHERE tenant_id=? AND name=?", (tenant_id, name))

    def add_agent(self, row: AgentRow) -> None:
        self._q("INSERT INTO agents VALUES (?,?,?,?,?,?)",
                (row.tenant_id, row.app, row.key, row.sandbox_id, row.app_version, row.created_at))  # fmt: skip

    def agent(self, tenant_id: str, app: str, key: str) -> AgentRow | None:
        rows = self._q("SELECT * FROM agents WHERE tenant_id=? AND app=? AND key=?", (tenant_id, app, key))
        return AgentRow(**dict(rows[0])) if rows else None

    def agents(self, tenant_id: str, app: str) -> list[AgentRow]:
        rows = self._q("SELECT * FROM agents WHERE tenant_id=? AND app=? ORDER BY key", (tenant_id, app))
        return [AgentRow(**dict(r)) for r in rows]

    def set_agent_version(self, tenant_id: str, app: str, key: str, version: int) -> None:
        self._q("UPDATE agents SET app_version=? WHERE tenant_id=? AND app=? AND key=?", (version, tenant_id, app, key))

    def delete_agent(self, tenant_id: str, app: str, key: str) -> None:
        self._q("DELETE FROM agents WHERE tenant_id=? AND app=? AND key=?", (tenant_id, app, key))

    # ---- named snapshots --------------------------------------------------------

    def add_snapshot(self, row: SnapshotRow) -> None:
        self._q("INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                (row.id, row.tenant_id, row.name, row.manifest, row.sandbox_id, row.template, row.bytes,
                 row.created_at))  # fmt: skip

    def snapshot(self, snapshot_id: str) -> SnapshotRow | None:
        rows = self._q("SELECT * FROM snapshots WHERE id=?", (snapshot_id,))
        return SnapshotRow(**dict(rows[0])) if rows else None

    def snapshot_by_name(self, tenant_id: str, name: str) -> SnapshotRow | None:
        rows = self._q("SELECT * FROM snapshots WHERE tenant_id=? AND name=?", (tenant_id, name))
        return SnapshotRow(**dict(rows[0])) if rows else None

    def snapshots(self, tenant_id: str) -> list[SnapshotRow]:
        rows = self._q("SELECT * FROM snapshots WHERE tenant_id=? ORDER BY created_at", (tenant_id,))
        return [SnapshotRow(**dict(r)) for r in rows]

    def snapshot_manifests(self) -> set[str]:
        return {r[0] for r in self._q("SELECT manifest FROM snapshots")}

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._q("DELETE FROM snapshots WHERE id=?", (snapshot_id,))

    # ---- secrets (values are Fernet ciphertext; see cloche.control.secrets) ----------

    def add_secret(self, row: SecretRow) -> None:
        """Insert a new secret; sqlite3.IntegrityError if (tenant, name) exists."""
        self._q("INSERT INTO secrets VALUES (?,?,?,?,?,?)",
                (row.tenant_id, row.name, row.ciphertext, json.dumps(row.hosts), row.created_at,
                 row.updated_at))  # fmt: skip

    def update_secret(self, tenant_id: str, name: str, ciphertext: bytes, hosts: list[str]) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE secrets SET ciphertext=?, hosts=?, updated_at=? WHERE tenant_id=? AND name=?",
                (ciphertext, json.dumps(hosts), time.time(), tenant_id, name),
            )
            return cur.rowcount == 1

    def secret(self, tenant_id: str, name: str) -> SecretRow | None:
        rows = self._q("SELECT * FROM secrets WHERE tenant_id=? AND name=?", (tenant_id, name))
        return _secret(rows[0]) if rows else None

    def secrets(self, tenant_id: str) -> list[SecretRow]:
        return [_secret(r) for r in self._q("SELECT * FROM secrets WHERE tenant_id=? ORDER BY name", (tenant_id,))]

    def secret_count(self) -> int:
        return self._q("SELECT COUNT(*) FROM secrets")[0][0]

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM secrets WHERE tenant_id=? AND name=?", (tenant_id, name)).rowcount == 1

    def reencrypt_secrets(self, rewrap: Callable[[bytes], bytes]) -> int:
        """Replace every secret's ciphertext by `rewrap(ciphertext)` in one transaction
        (all or nothing); `updated_at` is kept: the values did not change. Returns the count."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT tenant_id, name, ciphertext FROM secrets").fetchall()
                for tenant_id, name, ciphertext in rows:
                    self._db.execute("UPDATE secrets SET ciphertext=? WHERE tenant_id=? AND name=?",
                                     (rewrap(ciphertext), tenant_id, name))  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)


@dataclass
class SecretRow:
    tenant_id: str
    name: str
    ciphertext: bytes
    hosts: list[str]
    created_at: float
    updated_at: float


@dataclass
class SnapshotRow:
    id: str
    tenant_id: str
    name: str
    manifest: str
    sandbox_id: str
    template: str
    bytes: int
    created_at: float


@dataclass
class AppRow:
    tenant_id: str
    name: str
    version: int
    spec: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass
class AgentRow:
    tenant_id: str
    app: str
    key: str
    sandbox_id: str
    app_version: int
    created_at: float


def _tenant(r: sqlite3.Row) -> Tenant:
    return Tenant(r["id"], r["name"], bool(r["is_admin"]), r["max_sandboxes"], r["max_cpu"],
                  r["max_memory_mb"], r["created_at"], r["priority"],
                  tuple(filter(None, r["isolation"].split(","))))  # fmt: skip


def _app(r: sqlite3.Row) -> AppRow:
    return AppRow(r["tenant_id"], r["name"], r["version"], json.loads(r["spec"]), r["created_at"], r["updated_at"])


def _secret(r: sqlite3.Row) -> SecretRow:
    return SecretRow(r["tenant_id"], r["name"], bytes(r["ciphertext"]), json.loads(r["hosts"]), r["created_at"],
                     r["updated_at"])  # fmt: skip


def _sandbox(r: sqlite3.Row) -> SandboxRow:
    return SandboxRow(r["id"], r["tenant_id"], r["name"], r["template"], r["cpu"], r["memory_mb"],
                      r["disk_mb"], json.loads(r["metadata"]), r["created_at"])  # fmt: skip
