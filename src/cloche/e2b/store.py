"""What E2B needs per sandbox beyond cloche's own records: the envd access token (and
the traffic token the code interpreter sends), the E2B template name it was created
with, lifecycle flags and the create idempotency key. One small table beside the
control plane's, on its connection (`store.db.Store.query`)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from cloche.store.db import Store

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

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, E2bRow] = {}
        store.add_schema(SCHEMA)

    def get(self, sandbox_id: str) -> E2bRow | None:
        row = self._cache.get(sandbox_id)
        if row is not None:
            return row
        found = self._store.query("SELECT * FROM e2b_sandboxes WHERE sandbox_id=?", (sandbox_id,))
        if not found:
            return None
        row = E2bRow(**{**dict(found[0]), "auto_resume": bool(found[0]["auto_resume"])})
        self._cache[sandbox_id] = row
        return row

    def by_idempotency_key(self, tenant_id: str, key: str) -> E2bRow | None:
        found = self._store.query("SELECT sandbox_id FROM e2b_sandboxes WHERE tenant_id=? AND idempotency_key=?",
                                  (tenant_id, key))  # fmt: skip
        return self.get(found[0][0]) if found else None

    def ensure(self, sandbox_id: str, tenant_id: str, template: str, traffic_token: str, auto_resume: bool = False,
               idempotency_key: str | None = None) -> E2bRow:  # fmt: skip
        """The sandbox's row, created (with a fresh envd token) when it has none yet.
        The traffic token is cloche's own for the sandbox (the ingress checks it)."""
        existing = self.get(sandbox_id)
        if existing is not None and existing.tenant_id == tenant_id:
            return existing
        row = E2bRow(sandbox_id, tenant_id, new_token(), traffic_token, template, auto_resume, idempotency_key,
                     time.time())  # fmt: skip
        self._store.query("INSERT INTO e2b_sandboxes VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sandbox_id) DO UPDATE SET"
                          " tenant_id=excluded.tenant_id, access_token=excluded.access_token,"
                          " traffic_token=excluded.traffic_token, template=excluded.template,"
                          " auto_resume=excluded.auto_resume, idempotency_key=excluded.idempotency_key,"
                          " created_at=excluded.created_at",
                          (row.sandbox_id, row.tenant_id, row.access_token, row.traffic_token, row.template,
                           int(row.auto_resume), row.idempotency_key, row.created_at))  # fmt: skip
        self._cache[sandbox_id] = row
        return row

    def delete(self, sandbox_id: str) -> None:
        self._cache.pop(sandbox_id, None)
        self._store.query("DELETE FROM e2b_sandboxes WHERE sandbox_id=?", (sandbox_id,))

    def sandbox_ids(self) -> list[str]:
        return [r[0] for r in self._store.query("SELECT sandbox_id FROM e2b_sandboxes")]
