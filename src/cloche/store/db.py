"""Control-plane records (tenants, API keys, sandboxes, apps, agents, named snapshots,
secrets) behind one synchronous API, on either engine: the embedded SQLite file (WAL,
synchronous=FULL: an acknowledged write survives a crash or power loss) or PostgreSQL
for a cluster (durable at commit). API keys are stored only as SHA-256 hashes.

The schema comes from `cloche.store.migrations`; a constraint a write breaks is
`IntegrityError` (from `cloche.store.engine`) whichever engine is behind."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloche.store import migrations
from cloche.store.connect import open_engine
from cloche.store.engine import SQLITE, IntegrityError, run_script
from cloche.store.rows import (
    AgentRow,
    AppRow,
    SandboxRow,
    SecretRow,
    SnapshotRow,
    Tenant,
    app_of,
    sandbox_of,
    secret_of,
    tenant_of,
)

AUTH_CACHE_S = 5.0  # how long a key's tenant is remembered; a change made through this Store ends it at once
AUTH_CACHE_SIZE = 4096

__all__ = ["AgentRow", "AppRow", "IntegrityError", "SandboxRow", "SecretRow", "SnapshotRow", "Store", "Tenant"]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "ck_" + secrets.token_urlsafe(32)


def database_url(target: Path | str) -> str:
    """A path is the embedded SQLite file; a string is a URL (sqlite:///... or postgresql://...)."""
    return f"sqlite:///{target}" if isinstance(target, Path) else target


class Store:
    """Thread-safe access to the control-plane database.

    `upgrade` (default: only for SQLite) brings an older schema to this code's version
    at start; otherwise an older one is refused, as a newer one always is
    (`migrations.SchemaMismatch`)."""

    def __init__(self, target: Path | str, upgrade: bool | None = None) -> None:
        self._engine = open_engine(database_url(target))
        try:
            migrations.ensure(self._engine, self._engine.dialect is SQLITE if upgrade is None else upgrade)
        except BaseException:
            self._engine.close()
            raise
        # key hash -> (tenant, when looked up): every request authenticates, and the lookup
        # is a query. Cleared by every key or tenant change made here (`_keys_changed`); a
        # change made by another process (a PostgreSQL store shared) shows after AUTH_CACHE_S.
        self._auth_cache: dict[str, tuple[Tenant, float]] = {}
        self._auth_generation = 0

    def _keys_changed(self) -> None:
        self._auth_generation += 1
        self._auth_cache.clear()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self._engine.run(sql, args).rows

    def _changed(self, sql: str, args: tuple[Any, ...]) -> bool:
        return self._engine.run(sql, args).rowcount == 1

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """One statement (in the SQL both engines share), for a table an API layer keeps
        beside these (E2B's per-sandbox tokens: `e2b/store.py`)."""
        return self._q(sql, args)

    def add_schema(self, script: str) -> None:
        with self._engine.transaction() as tx:
            run_script(tx, script)

    def close(self) -> None:
        self._engine.close()

    def integrity_ok(self) -> bool:
        check = self._engine.dialect.integrity_sql
        return check is None or self._q(check)[0][0] == "ok"

    # ---- tenants and keys -----------------------------------------------------

    def create_tenant(self, name: str, max_sandboxes: int, max_cpu: float, max_memory_mb: int,
                      is_admin: bool = False, priority: int = 0,
                      isolation: tuple[str, ...] = ()) -> tuple[Tenant, str, str]:  # fmt: skip
        """Create a tenant with its first key. Returns (tenant, key id, key)."""
        tenant = Tenant("tn_" + secrets.token_hex(8), name, is_admin, max_sandboxes, max_cpu,
                        max_memory_mb, time.time(), priority, isolation)  # fmt: skip
        key_id, key = "key_" + secrets.token_hex(8), new_key()
        with self._engine.transaction() as tx:
            tx.execute(
                "INSERT INTO tenants (id, name, is_admin, max_sandboxes, max_cpu, max_memory_mb, created_at,"
                " priority, isolation) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    tenant.id,
                    name,
                    int(is_admin),
                    max_sandboxes,
                    max_cpu,
                    max_memory_mb,
                    tenant.created_at,
                    priority,
                    ",".join(isolation),
                ),  # fmt: skip
            )
            tx.execute("INSERT INTO api_keys VALUES (?,?,?,?,NULL)", (key_id, tenant.id, hash_key(key), time.time()))
        return tenant, key_id, key

    def tenant_by_name(self, name: str) -> Tenant | None:
        rows = self._q("SELECT * FROM tenants WHERE name=?", (name,))
        return tenant_of(rows[0]) if rows else None

    def tenant(self, tenant_id: str) -> Tenant | None:
        rows = self._q("SELECT * FROM tenants WHERE id=?", (tenant_id,))
        return tenant_of(rows[0]) if rows else None

    def tenants(self) -> list[Tenant]:
        return [tenant_of(r) for r in self._q("SELECT * FROM tenants ORDER BY created_at")]

    def set_priority(self, tenant_id: str, priority: int) -> bool:
        try:
            return self._changed("UPDATE tenants SET priority=? WHERE id=?", (priority, tenant_id))
        finally:
            self._keys_changed()

    def add_key(self, tenant_id: str) -> tuple[str, str]:
        key_id, key = "key_" + secrets.token_hex(8), new_key()
        self._q("INSERT INTO api_keys VALUES (?,?,?,?,NULL)",
                (key_id, tenant_id, hash_key(key), time.time()))  # fmt: skip
        return key_id, key

    def revoke_key(self, tenant_id: str, key_id: str) -> bool:
        try:
            return self._changed("UPDATE api_keys SET revoked_at=? WHERE id=? AND tenant_id=? AND revoked_at IS NULL",
                                 (time.time(), key_id, tenant_id))  # fmt: skip
        finally:
            self._keys_changed()  # after the write: a lookup that read the old row is not kept

    def authenticate(self, key: str) -> Tenant | None:
        """The key's tenant (None: unknown or revoked). The Tenant may be shared between
        calls: treat it as read-only."""
        h = hash_key(key)
        now = time.monotonic()
        cached = self._auth_cache.get(h)
        if cached is not None and now - cached[1] < AUTH_CACHE_S:
            return cached[0]
        generation = self._auth_generation
        rows = self._q(
            "SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE k.key_hash=? AND k.revoked_at IS NULL",
            (h,),
        )
        if not rows:
            return None
        tenant = tenant_of(rows[0])
        if generation == self._auth_generation:  # no change raced the lookup (another thread)
            if len(self._auth_cache) >= AUTH_CACHE_SIZE:
                self._auth_cache.clear()
            self._auth_cache[h] = (tenant, now)
        return tenant

    # ---- sandboxes ------------------------------------------------------------

    def add_sandbox(self, row: SandboxRow) -> None:
        self._q(
            "INSERT INTO sandboxes VALUES (?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.tenant_id,
                row.name,
                row.template,
                row.cpu,
                row.memory_mb,
                row.disk_mb,
                json.dumps(row.metadata),
                row.created_at,
            ),  # fmt: skip
        )

    def sandbox(self, sandbox_id: str) -> SandboxRow | None:
        rows = self._q("SELECT * FROM sandboxes WHERE id=?", (sandbox_id,))
        return sandbox_of(rows[0]) if rows else None

    def sandbox_by_name(self, tenant_id: str, name: str) -> SandboxRow | None:
        rows = self._q("SELECT * FROM sandboxes WHERE tenant_id=? AND name=?", (tenant_id, name))
        return sandbox_of(rows[0]) if rows else None

    def sandboxes(self, tenant_id: str | None = None) -> list[SandboxRow]:
        if tenant_id is None:
            return [sandbox_of(r) for r in self._q("SELECT * FROM sandboxes ORDER BY created_at")]
        rows = self._q("SELECT * FROM sandboxes WHERE tenant_id=? ORDER BY created_at", (tenant_id,))
        return [sandbox_of(r) for r in rows]

    def update_limits(self, sandbox_id: str, cpu: float, memory_mb: int) -> None:
        self._q("UPDATE sandboxes SET cpu=?, memory_mb=? WHERE id=?", (cpu, memory_mb, sandbox_id))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._q("DELETE FROM sandboxes WHERE id=?", (sandbox_id,))

    # ---- apps and agents --------------------------------------------------------

    def put_app(self, tenant_id: str, name: str, spec: dict[str, Any]) -> AppRow:
        """Create or redeploy an app; every deploy gets the next version (one statement:
        two deploys at once get two versions)."""
        now = time.time()
        version, created = self._q(
            "INSERT INTO apps VALUES (?,?,1,?,?,?) ON CONFLICT (tenant_id, name) DO UPDATE SET"
            " version = apps.version + 1, spec = excluded.spec, updated_at = excluded.updated_at"
            " RETURNING version, created_at",
            (tenant_id, name, json.dumps(spec), now, now),
        )[0]
        return AppRow(tenant_id, name, version, spec, created, now)

    def app(self, tenant_id: str, name: str) -> AppRow | None:
        rows = self._q("SELECT * FROM apps WHERE tenant_id=? AND name=?", (tenant_id, name))
        return app_of(rows[0]) if rows else None

    def apps(self, tenant_id: str) -> list[AppRow]:
        return [app_of(r) for r in self._q("SELECT * FROM apps WHERE tenant_id=? ORDER BY name", (tenant_id,))]

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
        """Insert a new secret; IntegrityError if (tenant, name) exists."""
        self._q("INSERT INTO secrets VALUES (?,?,?,?,?,?)",
                (row.tenant_id, row.name, row.ciphertext, json.dumps(row.hosts), row.created_at,
                 row.updated_at))  # fmt: skip

    def update_secret(self, tenant_id: str, name: str, ciphertext: bytes, hosts: list[str]) -> bool:
        return self._changed("UPDATE secrets SET ciphertext=?, hosts=?, updated_at=? WHERE tenant_id=? AND name=?",
                             (ciphertext, json.dumps(hosts), time.time(), tenant_id, name))  # fmt: skip

    def secret(self, tenant_id: str, name: str) -> SecretRow | None:
        rows = self._q("SELECT * FROM secrets WHERE tenant_id=? AND name=?", (tenant_id, name))
        return secret_of(rows[0]) if rows else None

    def secrets(self, tenant_id: str) -> list[SecretRow]:
        return [secret_of(r) for r in self._q("SELECT * FROM secrets WHERE tenant_id=? ORDER BY name", (tenant_id,))]

    def secret_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM secrets")[0][0])

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        return self._changed("DELETE FROM secrets WHERE tenant_id=? AND name=?", (tenant_id, name))

    def reencrypt_secrets(self, rewrap: Callable[[bytes], bytes]) -> int:
        """Replace every secret's ciphertext by `rewrap(ciphertext)` in one transaction
        (all or nothing); `updated_at` is kept: the values did not change. Returns the count."""
        with self._engine.transaction() as tx:
            rows = tx.execute("SELECT tenant_id, name, ciphertext FROM secrets" + tx.dialect.for_update).rows
            for tenant_id, name, ciphertext in rows:
                tx.execute("UPDATE secrets SET ciphertext=? WHERE tenant_id=? AND name=?",
                           (rewrap(bytes(ciphertext)), tenant_id, name))  # fmt: skip
        return len(rows)
