"""Durable per-agent state: a versioned KV and an append-only log per namespace.

`engine` defines the interface and its rules, `sqlite` the embedded backend (group
commit), `postgres` the PostgreSQL backend, `sandbox` the unix socket that serves a
sandbox its own namespace, `incontainer` the stdlib-only client used inside sandboxes.
"""

from cloche.state.engine import (
    Appended,
    Conflict,
    Entry,
    Fence,
    InvalidArgument,
    InvalidName,
    Item,
    KeyInfo,
    LogPage,
    NotFound,
    Op,
    OpResult,
    Page,
    StaleFence,
    StateEngine,
    StateError,
    StateLimits,
    TooLarge,
    Unavailable,
)

__all__ = [
    "Appended", "Conflict", "Entry", "Fence", "InvalidArgument", "InvalidName", "Item", "KeyInfo", "LogPage",
    "NotFound", "Op", "OpResult", "Page", "StateEngine", "StaleFence", "StateError", "StateLimits", "TooLarge",
    "Unavailable",
]  # fmt: skip
