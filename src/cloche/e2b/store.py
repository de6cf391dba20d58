"""What E2B needs per sandbox beyond cloche's own records: the envd access token (and
the traffic token the code interpreter sends), the E2B template name it was created
with, lifecycle flags and the create idempotency key. One small table in the same
SQLite file as the control plane, on a connection of its own."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS e2b_sandboxes (
    sandbox_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    access_token TEXT NOT NULL,
    traffic_token TEXT NOT NULL,
    template TEXT NOT NULL,
    auto_resume INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS e2b_sandboxes_idem
    ON e2b_sandboxes (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""


@dataclass(frozen=True)
class E2bRow:
    sandbox_id: str
    tenant_id: str
    access_token: str
    traffic_token: str
    template: str
    auto_resume: bool
    idempotency_key: str | None
    created_at: float


def new_token() -> str:
    return "ea_" + secrets.token_urlsafe(32)


class E2bStore:
    """Thread-safe; rows are cached in memory (every envd request looks its token up)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._cache: dict[str, E2bRow] = {}
        with self._lock:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, sandbox_id: str) -> E2bRow | None:
        row = self._cache.get(sandbox_id)
        if row is not None:
            return row
        with self._lock:
            found = self._db.execute("SELECT * FROM e2b_sandboxes WHERE sandbox_id=?", (sandbox_id,)).fetchone()
        if found is None:
            return None
        row = E2bRow(**{**dict(found), "auto_resume": bool(found["auto_resume"])})
        self._cache[sandbox_id] = row
        return row

    def by_idempotency_key(self, tenant_id: str, key: str) -> E2bRow | None:
        with self._lock:
            found = self._db.execute("SELECT sandbox_id FROM e2b_sandboxes WHERE tenant_id=? AND idempotency_key=?",
                                     (tenant_id, key)).fetchone()  # fmt: skip
        return self.get(found[0]) if found else None

    def ensure(self, sandbox_id: str, tenant_id: str, template: str, traffic_token: str, auto_resume: bool = False,
               idempotency_key: str | None = None) -> E2bRow:  # fmt: skip
        """The sandbox's row, created (with a fresh envd token) when it has none yet.
        The traffic token is cloche's own for the sandbox (the ingress checks it)."""
        existing = self.get(sandbox_id)
        if existing is not None and existing.tenant_id == tenant_id:
            return existing
        row = E2bRow(sandbox_id, tenant_id, new_token(), traffic_token, template, auto_resume, idempotency_key,
                     time.time())  # fmt: skip
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO e2b_sandboxes VALUES (?,?,?,?,?,?,?,?)",
                (
                    row.sandbox_id,
                    row.tenant_id,
                    row.access_token,
                    row.traffic_token,
                    row.template,
                    int(row.auto_resume),
                    row.idempotency_key,
                    row.created_at,
                ),  # fmt: skip
            )
        self._cache[sandbox_id] = row
        return row

    def delete(self, sandbox_id: str) -> None:
        self._cache.pop(sandbox_id, None)
        with self._lock:
            self._db.execute("DELETE FROM e2b_sandboxes WHERE sandbox_id=?", (sandbox_id,))

    def sandbox_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT sandbox_id FROM e2b_sandboxes")]
