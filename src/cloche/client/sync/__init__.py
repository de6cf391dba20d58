"""The blocking client: :class:`Client` and the :class:`Sandbox` handle.

One module per resource (sandboxes, files, apps and agents, state, the tenant-wide
admin resources), each mirrored by :mod:`cloche.client.async_`; the requests they send
are built in :mod:`cloche.client._api` and the multi-request logic is in
:mod:`cloche.client._flows`, so this face only blocks.
"""

from __future__ import annotations

from .admin import Nodes, Secrets, Snapshots, Templates, Tenants
from .apps import Agent, Agents, AgentStream, Apps
from .client import Client
from .files import Files
from .sandboxes import Sandbox, Sandboxes
from .state import State

__all__ = [
    "Agent",
    "AgentStream",
    "Agents",
    "Apps",
    "Client",
    "Files",
    "Nodes",
    "Sandbox",
    "Sandboxes",
    "Secrets",
    "Snapshots",
    "State",
    "Templates",
    "Tenants",
]
