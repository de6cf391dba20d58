"""Python SDK for Cloche.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) share one request model
and one error mapping; sandboxes are handled through :class:`Sandbox` /
:class:`AsyncSandbox`.  Configuration comes from arguments or the ``CLOCHE_URL`` and
``CLOCHE_API_KEY`` environment variables.
"""

from __future__ import annotations

from ._base import DEFAULT_TIMEOUT, DEFAULT_URL, ENV_API_KEY, ENV_URL
from .async_ import AsyncClient, AsyncSandbox
from .errors import (
    ClocheError,
    Conflict,
    ConnectionFailed,
    DiskFull,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
)
from .models import (
    ApiKey,
    ArchiveResult,
    Entry,
    ExecEvent,
    ExecExit,
    ExecOutput,
    ExecResult,
    ExecStart,
    Health,
    NewTenant,
    NodeInfo,
    SandboxInfo,
    Tenant,
    WriteResult,
)
from .sync import Client, Sandbox

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "ENV_API_KEY",
    "ENV_URL",
    "ApiKey",
    "ArchiveResult",
    "AsyncClient",
    "AsyncSandbox",
    "Client",
    "ClocheError",
    "Conflict",
    "ConnectionFailed",
    "DiskFull",
    "Entry",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStart",
    "Forbidden",
    "Health",
    "InvalidRequest",
    "InvalidState",
    "NewTenant",
    "NodeInfo",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "Sandbox",
    "SandboxInfo",
    "ServerError",
    "Tenant",
    "Unauthorized",
    "Unavailable",
    "WriteResult",
]
