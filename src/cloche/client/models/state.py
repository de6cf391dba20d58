"""Durable state answers: a KV value with its version, key pages, batch results, log pages."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import Field

from .base import ApiModel


class StateValue(ApiModel):
    """A KV value with its version (``put(..., if_match=version)`` for compare-and-set)."""

    key: str
    value: bytes
    version: int
    expires_at: datetime | None = Field(None, description="When a key written with a TTL expires.")

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode()

    def json(self) -> Any:
        """The value parsed as JSON."""
        return json.loads(self.value)


class KeyInfo(ApiModel):
    """A live key in a listing."""

    key: str
    version: int
    size: int


class KeyPage(ApiModel):
    """One page of a key listing; pass ``next_cursor`` back for the next (``None``: the last)."""

    items: list[KeyInfo]
    next_cursor: str | None = None


class BatchResult(ApiModel):
    """The outcome of one operation of an atomic batch."""

    op: str
    key: str
    version: int | None = Field(
        None,
        description="put: the new version; delete: the tombstone's; check: the current one.",
    )
    existed: bool = Field(True, description="delete and check: whether the key existed.")


class LogEntry(ApiModel):
    """One entry of a namespace's append-only log."""

    seq: int
    data: bytes

    @property
    def text(self) -> str:
        """The entry decoded as UTF-8."""
        return self.data.decode()


class LogPage(ApiModel):
    """Log entries after a sequence number, oldest first.

    Attributes:
        last_seq: The newest sequence number in the log (0 when empty); read on with
            ``after=items[-1].seq`` while ``items`` is not empty.
        first_seq: The oldest sequence number still kept (entries before it were trimmed).
    """

    items: list[LogEntry]
    last_seq: int = 0
    first_seq: int = 0
