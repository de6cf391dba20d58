"""The blocking face of durable state: ``client.state(namespace)``.

Mirrored by :mod:`cloche.client.async_.state`; waits and pagination are the shared
flows of :mod:`cloche.client._flows`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
from ._sender import Sender

T = TypeVar("T")


class State:
    """``client.state(namespace)``: a durable, versioned KV and an append-only log.

    Namespaces belong to the tenant and are created by their first write; a sandbox's
    own namespace is named after its id (``client.state(sandbox.id)``).  Versions only increase;
    pass one back as ``if_match`` for compare-and-set.
    """

    def __init__(self, client: Sender, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"State(namespace={self.namespace!r})"

    # -- kv ----------------------------------------------------------------------------

    def get(self, key: str) -> StateValue | None:
        """The value of ``key`` with its version, or ``None`` if it does not exist."""
        return self._client._run(_flows.kv_get(self.namespace, key))

    def put(
        self,
        key: str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ttl_s: float | None = None,
    ) -> int:
        """Store ``value`` (text is encoded as UTF-8) under ``key``; return its new version.

        Args:
            if_match: Only if the key is at this version now.
            if_none_match: Only if the key does not exist.
            ttl_s: Expire the key after this many seconds.

        Raises:
            PreconditionFailed: A condition did not hold (``current_version`` says why).
            PayloadTooLarge: The value exceeds the server's limit (1 MiB by default).
        """
        return self._client._call(
            _api.kv_put(self.namespace, key, value, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl_s)
        )

    def delete(self, key: str, *, if_match: int | None = None) -> None:
        """Delete ``key`` (no error if it does not exist, unless ``if_match`` is given).

        Raises:
            PreconditionFailed: ``if_match`` is not the key's current version.
        """
        self._client._call(_api.kv_delete(self.namespace, key, if_match=if_match))

    def list(self, prefix: str = "", *, page_size: int = 100) -> Iterator[KeyInfo]:
        """Iterate over the live keys starting with ``prefix`` in byte order, fetching
        ``page_size`` at a time."""
        return self._client._iterate(_flows.keys(self.namespace, prefix, page_size))

    def list_page(self, prefix: str = "", *, cursor: str | None = None, limit: int = 100) -> KeyPage:
        """One page of :meth:`list`; pass ``next_cursor`` back as ``cursor``."""
        return self._client._call(_api.kv_list(self.namespace, prefix, cursor, limit))

    def batch(self, ops: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Apply several operations atomically, in order: all of them or none.

        Each op is a dict: ``{"op": "put", "key": k, "value": bytes | str, "if_match": v,
        "if_none_match": True, "ttl_s": s}``, ``{"op": "delete", "key": k, "if_match": v}``
        or ``{"op": "check", "key": k, "if_match": v}`` (asserts only).

        Raises:
            PreconditionFailed: An op's condition failed (``index`` says which); nothing
                was applied.
        """
        return self._client._call(_api.kv_batch(self.namespace, ops))

    # -- log ---------------------------------------------------------------------------

    def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        """Append an entry to the log; return its sequence number.

        With ``idempotency_key``, a retry of the same append returns the original
        sequence number and adds nothing.
        """
        return self._client._call(_api.log_append(self.namespace, data, idempotency_key=idempotency_key))

    def read(self, after: int = 0, limit: int = 100) -> LogPage:
        """Up to ``limit`` entries with a sequence number above ``after``, oldest first."""
        return self._client._call(_api.log_read(self.namespace, after, limit))

    def wait(self, after: int = 0, timeout_s: float = 30.0, limit: int = 100) -> LogPage:
        """Like :meth:`read`, but wait up to ``timeout_s`` for an entry after ``after`` to
        arrive (long polls of at most :data:`~cloche.client._api.LONG_POLL_S` each); the
        page is empty if none did."""
        return self._client._run(_flows.wait(self.namespace, after, timeout_s, limit))

    def follow(self, after: int = 0, wait_s: float = _api.LONG_POLL_S) -> Iterator[LogEntry]:
        """Iterate over the log's entries after ``after``, then over new ones as they are
        appended, forever (long polls of ``wait_s``)."""
        return self._client._iterate(_flows.follow(self.namespace, after, wait_s))

    def trim(self, upto: int) -> int:
        """Drop every entry up to ``upto``; return the oldest sequence number kept."""
        return self._client._call(_api.log_trim(self.namespace, upto))

    # -- grants ------------------------------------------------------------------------

    def grant(self, sandbox_id: str) -> None:
        """Let one of your sandboxes use this namespace from inside (``cloche-state -n``)."""
        self._client._call(_api.grant(self.namespace, sandbox_id))

    def revoke(self, sandbox_id: str) -> None:
        """Withdraw a :meth:`grant`."""
        self._client._call(_api.revoke(self.namespace, sandbox_id))

    def grants(self) -> list[str]:
        """The ids of the sandboxes granted this namespace."""
        return self._client._call(_api.list_grants(self.namespace))
