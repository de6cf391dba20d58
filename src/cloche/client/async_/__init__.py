"""The asyncio client: :class:`AsyncClient` and the :class:`AsyncSandbox` handle.

It mirrors :mod:`cloche.client.sync` module for module and method for method: the
requests are built in :mod:`cloche.client._api` and the multi-request logic is in
:mod:`cloche.client._flows`, so this face only awaits.
"""

from __future__ import annotations

from .admin import AsyncNodes, AsyncSecrets, AsyncSnapshots, AsyncTemplates, AsyncTenants
from .apps import AsyncAgent, AsyncAgents, AsyncAgentStream, AsyncApps
from .client import AsyncClient
from .files import AsyncFiles
from .sandboxes import AsyncSandbox, AsyncSandboxes
from .state import AsyncState

__all__ = [
    "AsyncAgent",
    "AsyncAgentStream",
    "AsyncAgents",
    "AsyncApps",
    "AsyncClient",
    "AsyncFiles",
    "AsyncNodes",
    "AsyncSandbox",
    "AsyncSandboxes",
    "AsyncSecrets",
    "AsyncSnapshots",
    "AsyncState",
    "AsyncTemplates",
    "AsyncTenants",
]
