"""The asyncio client, :class:`AsyncClient`: its resources and its context manager.

It mirrors :mod:`cloche.client.sync` method for method; every network call is a
coroutine and ``exec_stream`` is an async iterator.  Example::

    from cloche import AsyncClient

    async with AsyncClient() as client:
        async with await client.sandboxes.create() as sbx:
            result = await sbx.exec("echo hi")
            async for event in sbx.exec_stream(["python3", "-c", "print(1)"]):
                print(event)
"""

from __future__ import annotations

from types import TracebackType

import httpx

from .. import _api
from .._base import DEFAULT_TIMEOUT
from ..models import Health
from ._sender import AsyncSender
from .admin import AsyncNodes, AsyncSecrets, AsyncSnapshots, AsyncTemplates, AsyncTenants
from .apps import AsyncAgents, AsyncApps
from .sandboxes import AsyncSandboxes
from .state import AsyncState


class AsyncClient(AsyncSender):
    """Asyncio client for a Cloche server; the async twin of :class:`~cloche.Client`.

    Args:
        url: Server URL; defaults to ``$CLOCHE_URL`` or ``http://127.0.0.1:8787``.
        api_key: Tenant or admin API key; defaults to ``$CLOCHE_API_KEY``.
        timeout: Seconds to wait when connecting and for ordinary responses.
        transport: Optional httpx async transport (e.g. ``httpx.MockTransport``).

    Attributes:
        sandboxes: Create, look up and list sandboxes.
        snapshots: List and delete named snapshots of sandboxes' files.
        secrets: Store secrets sandboxes can send (to their hosts) without holding them.
        apps: Deploy apps, whose per-key agents :meth:`agents` reaches.
        tenants: Manage tenants and API keys (admin key required).
        nodes: Inspect worker nodes (admin key required).

    Use it as an async context manager, or await :meth:`close` when done.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, transport=transport)
        self.sandboxes = AsyncSandboxes(self)
        self.snapshots = AsyncSnapshots(self)
        self.secrets = AsyncSecrets(self)
        self.apps = AsyncApps(self)
        self.tenants = AsyncTenants(self)
        self.nodes = AsyncNodes(self)
        self.templates = AsyncTemplates(self)

    def agents(self, app: str) -> AsyncAgents:
        """The agents of ``app``: ``await client.agents("memo")["alice"].invoke(json=...)``."""
        return AsyncAgents(self, app)

    def state(self, namespace: str) -> AsyncState:
        """The durable KV and log of a state namespace (created by its first write)."""
        return AsyncState(self, namespace)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def health(self) -> Health:
        """Check that the server is up (``GET /healthz``); needs no API key."""
        return await self._call(_api.health())
