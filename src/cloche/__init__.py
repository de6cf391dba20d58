"""Cloche: isolated, durable, per-user sandboxes for one-to-one AI agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloche.constants import VERSION as __version__

# The SDK is exported lazily so that server and node processes importing `cloche.*`
# do not pay for (or depend on) the client stack.
__all__ = [
    "__version__",
    "AgentError",
    "AsyncClient",
    "AsyncSandbox",
    "Client",
    "ClocheError",
    "Conflict",
    "ConnectionFailed",
    "DiskFull",
    "Forbidden",
    "InvalidRequest",
    "InvalidState",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "Sandbox",
    "ServerError",
    "Unauthorized",
    "Unavailable",
]
_SDK_EXPORTS = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from .client import (
        AgentError,
        AsyncClient,
        AsyncSandbox,
        Client,
        ClocheError,
        Conflict,
        ConnectionFailed,
        DiskFull,
        Forbidden,
        InvalidRequest,
        InvalidState,
        NotFound,
        PayloadTooLarge,
        PreconditionFailed,
        QuotaExceeded,
        RateLimited,
        RequestTimeout,
        Sandbox,
        ServerError,
        Unauthorized,
        Unavailable,
    )


def __getattr__(name: str) -> Any:
    if name in _SDK_EXPORTS:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SDK_EXPORTS])
