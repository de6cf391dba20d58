"""The first, standalone state SDK, kept for its callers; new code uses the client::

    from cloche import Client

    with Client() as client:                          # CLOCHE_URL, CLOCHE_API_KEY
        memory = client.state("agent-42")             # or a sandbox id: its own namespace
        version = memory.put("profile", b"{}")
        item = memory.get("profile")                  # StateValue(value, version) or None
        memory.put("profile", b"{...}", if_match=item.version)  # PreconditionFailed on a race
        seq = memory.append(b"turn 1", idempotency_key="turn-1")
        page = memory.wait(after=0, timeout_s=10)     # LogPage(items=[LogEntry(seq, data)])

:class:`StateClient` and :class:`Namespace` wrap :class:`cloche.client.sync.State` with
the draft's return shapes (tuples and dicts); :class:`StateConflict` is
:class:`~cloche.client.errors.PreconditionFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from .errors import ClocheError, PreconditionFailed
from .sync import Client, State

__all__ = ["Namespace", "StateClient", "StateConflict", "StateError"]

StateError = ClocheError
"""Any failed state call."""
StateConflict = PreconditionFailed
"""412: a condition did not hold (``current_version``; ``index`` for batches)."""


class Namespace:
    """One namespace, with the draft SDK's return shapes."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.name = state.namespace

    def get(self, key: str) -> tuple[bytes | None, int | None]:
        """``(value, version)``, or ``(None, None)`` when the key does not exist."""
        item = self._state.get(key)
        return (None, None) if item is None else (item.value, item.version)

    def put(
        self,
        key: str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ttl_s: float | None = None,
    ) -> int:
        """Store a value; return its new version."""
        return self._state.put(key, value, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl_s)

    def delete(self, key: str, *, if_match: int | None = None) -> None:
        """Delete a key."""
        self._state.delete(key, if_match=if_match)

    def list(self, prefix: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Every live key under ``prefix`` as ``{"key", "version", "size"}``."""
        return [item.model_dump() for item in self._state.list(prefix, page_size=limit)]

    def batch(self, ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Apply ops atomically; results as ``{"op", "key", "version", "existed"}``."""
        return [result.model_dump() for result in self._state.batch(ops)]

    def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        """Append a log entry; return its sequence number."""
        return self._state.append(data, idempotency_key=idempotency_key)

    def read(self, after: int = 0, limit: int = 100, wait_s: float = 0) -> tuple[list[tuple[int, bytes]], int]:
        """``([(seq, data)], last_seq)``; ``wait_s > 0`` long-polls for the first new entry."""
        page = self._state.wait(after, wait_s, limit) if wait_s > 0 else self._state.read(after, limit)
        return [(entry.seq, entry.data) for entry in page.items], page.last_seq

    def trim(self, upto: int) -> int:
        """Drop entries up to ``upto``; return the first sequence number kept."""
        return self._state.trim(upto)

    def grant(self, sandbox_id: str) -> None:
        """Let one of the tenant's sandboxes use this namespace from inside."""
        self._state.grant(sandbox_id)

    def revoke(self, sandbox_id: str) -> None:
        """Withdraw a grant."""
        self._state.revoke(sandbox_id)

    def grants(self) -> list[str]:
        """The sandboxes granted this namespace."""
        return self._state.grants()


class StateClient:
    """A :class:`~cloche.Client` used only for state (``namespace(name)``)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        self._client = Client(url, api_key, timeout)

    def namespace(self, name: str) -> Namespace:
        """The namespace ``name`` of the key's tenant."""
        return Namespace(self._client.state(name))

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
