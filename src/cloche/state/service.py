"""Wiring for the server: pick the backend, open it, serve sandboxes their sockets.

Backend: SQLite at DATA/state.db unless CLOCHE_STATE_DSN names a PostgreSQL database
(`postgresql://user@host:port/db`). CLOCHE_STATE_MAX_VALUE_BYTES overrides the 1 MiB
value (and log entry) limit; request bodies are also capped by the server's
max_json_bytes (CLOCHE_MAX_JSON_BYTES), which must be at least as large.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloche.state.engine import StateEngine, StateLimits
from cloche.state.sandbox import SandboxStateSockets


def limits_from_env(environ: Mapping[str, str]) -> StateLimits:
    raw = environ.get("CLOCHE_STATE_MAX_VALUE_BYTES", "").strip()
    if not raw:
        return StateLimits()
    n = int(raw)
    return StateLimits(max_value_bytes=n, max_entry_bytes=n)


def build_engine(data_dir: Path, environ: Mapping[str, str] | None = None) -> StateEngine:
    environ = os.environ if environ is None else environ
    limits = limits_from_env(environ)
    dsn = environ.get("CLOCHE_STATE_DSN", "").strip()
    if dsn:
        from cloche.state.postgres import PostgresEngine

        return PostgresEngine(dsn, limits)
    from cloche.state.sqlite import SqliteEngine

    return SqliteEngine(data_dir / "state.db", limits)


@dataclass
class StateService:
    engine: StateEngine
    sockets: SandboxStateSockets

    @classmethod
    async def start(cls, data_dir: Path, store: Any, runtime: Any) -> StateService:
        """Open the engine and register the socket listener on the runtime. Call before
        `runtime.start()`, so sandboxes adopted on start get their sockets too."""
        engine = build_engine(data_dir)
        await engine.open()

        def owner(sandbox_id: str) -> str | None:
            row = store.sandbox(sandbox_id)
            return row.tenant_id if row is not None else None

        sockets = SandboxStateSockets(engine, owner)
        runtime.listeners.append(sockets)
        return cls(engine, sockets)

    async def close(self) -> None:
        await self.sockets.close()
        await self.engine.close()
