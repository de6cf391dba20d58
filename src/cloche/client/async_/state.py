"""The async face of durable state: ``client.state(namespace)``.

It mirrors :mod:`cloche.client.sync.state` method for method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

from .. import _api, _flows
from ..models import (
    BatchResult,
    KeyInfo,
    KeyPage,
    LogEntry,
    LogPage,
    StateValue,
)
from ._sender import AsyncSender

T = TypeVar("T")


class AsyncState:
    """``client.state(namespace)``: a durable, versioned KV and an append-only log
    (see :class:`cloche.client.sync.State`)."""

    def __init__(self, client: AsyncSender, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"AsyncState(namespace={self.namespace!r})"

    async def get(self, key: str) -> StateValue | None:
        """The value of ``key`` with its version, or ``None`` if it does not exist."""
        return await self._client._run(_flows.kv_get(self.namespace, key))

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ttl_s: float | None = None,
    ) -> int:
        """Store ``value`` under ``key``; return its new version (raises
        :class:`PreconditionFailed` when ``if_match`` / ``if_none_match`` does not hold)."""
        return await self._client._call(
            _api.kv_put(self.namespace, key, value, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl_s)
        )

    async def delete(self, key: str, *, if_match: int | None = None) -> None:
        """Delete ``key`` (raises :class:`PreconditionFailed` if ``if_match`` does not hold)."""
        await self._client._call(_api.kv_delete(self.namespace, key, if_match=if_match))

    async def list(self, prefix: str = "", *, page_size: int = 100) -> AsyncIterator[KeyInfo]:
        """Iterate (``async for``) over the live keys starting with ``prefix``, a page at a time."""
        async for item in self._client._iterate(_flows.keys(self.namespace, prefix, page_size)):
            yield item

    async def list_page(self, prefix: str = "", *, cursor: str | None = None, limit: int = 100) -> KeyPage:
        """One page of :meth:`list`; pass ``next_cursor`` back as ``cursor``."""
        return await self._client._call(_api.kv_list(self.namespace, prefix, cursor, limit))

    async def batch(self, ops: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Apply several operations atomically; see :meth:`cloche.client.sync.State.batch`."""
        return await self._client._call(_api.kv_batch(self.namespace, ops))

    async def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        """Append an entry to the log; return its sequence number (a retry with the same
        ``idempotency_key`` returns the original one and adds nothing)."""
        return await self._client._call(_api.log_append(self.namespace, data, idempotency_key=idempotency_key))

    async def read(self, after: int = 0, limit: int = 100) -> LogPage:
        """Up to ``limit`` entries with a sequence number above ``after``, oldest first."""
        return await self._client._call(_api.log_read(self.namespace, after, limit))

    async def wait(self, after: int = 0, timeout_s: float = 30.0, limit: int = 100) -> LogPage:
        """Like :meth:`read`, but wait up to ``timeout_s`` for a new entry (in long polls
        of at most :data:`~cloche.client._api.LONG_POLL_S`)."""
        return await self._client._run(_flows.wait(self.namespace, after, timeout_s, limit))

    async def follow(self, after: int = 0, wait_s: float = _api.LONG_POLL_S) -> AsyncIterator[LogEntry]:
        """Iterate over the entries after ``after``, then over new ones, forever."""
        async for entry in self._client._iterate(_flows.follow(self.namespace, after, wait_s)):
            yield entry

    async def trim(self, upto: int) -> int:
        """Drop every entry up to ``upto``; return the oldest sequence number kept."""
        return await self._client._call(_api.log_trim(self.namespace, upto))

    async def grant(self, sandbox_id: str) -> None:
        """Let one of your sandboxes use this namespace from inside."""
        await self._client._call(_api.grant(self.namespace, sandbox_id))

    async def revoke(self, sandbox_id: str) -> None:
        """Withdraw a :meth:`grant`."""
        await self._client._call(_api.revoke(self.namespace, sandbox_id))

    async def grants(self) -> list[str]:
        """The ids of the sandboxes granted this namespace."""
        return await self._client._call(_api.list_grants(self.namespace))
