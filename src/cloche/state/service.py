"""Wiring for the server: pick the backend, open it, serve sandboxes their sockets.

Backend: SQLite at DATA/state.db unless CLOCHE_STATE_DSN (`Settings.state_dsn`) names a
PostgreSQL database (`postgresql://user@host:port/db`). CLOCHE_STATE_MAX_VALUE_BYTES
(`Settings.state_max_value_bytes`) overrides the 1 MiB value (and log entry) limit;
request bodies are also capped by the server's max_json_bytes (CLOCHE_MAX_JSON_BYTES),
which must be at least as large.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloche.config import Settings
from cloche.state.engine import Fence, StateEngine, StateLimits
from cloche.state.sandbox import SandboxStateSockets


def build_engine(settings: Settings) -> StateEngine:
    n = settings.state_max_value_bytes
    limits = StateLimits(max_value_bytes=n, max_entry_bytes=n) if n else StateLimits()
    dsn = settings.state_dsn.strip()
    if dsn:
        from cloche.state.postgres import PostgresEngine

        return PostgresEngine(dsn, limits)
    from cloche.state.sqlite import SqliteEngine

    return SqliteEngine(settings.data_dir / "state.db", limits)


@dataclass
class StateService:
    engine: StateEngine
    sockets: SandboxStateSockets

    @classmethod
    async def start(cls, settings: Settings, store: Any, runtime: Any | None,
                    fence_of: Callable[[str], Fence | None] | None = None) -> StateService:  # fmt: skip
        """Open the engine and register the socket listener on the runtime. Call before
        `runtime.start()`, so sandboxes adopted on start get their sockets too. Without a
        runtime (a cluster's server replica: its nodes serve the sockets) only the engine.
        In cluster mode `fence_of` gives a sandbox's fence (its claim's token), which every
        write from its socket carries."""
        engine = build_engine(settings)
        await engine.open()

        def owner(sandbox_id: str) -> str | None:
            row = store.sandbox(sandbox_id)
            return row.tenant_id if row is not None else None

        sockets = SandboxStateSockets(engine, owner, fence_of)
        if runtime is not None:
            runtime.listeners.append(sockets)
        return cls(engine, sockets)

    async def close(self) -> None:
        await self.sockets.close()
        await self.engine.close()
