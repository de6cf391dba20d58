"""The blocking client, :class:`Client`: its resources and its context manager.

Example::

    from cloche import Client

    with Client() as client, client.sandboxes.create(template="base") as sbx:
        print(sbx.exec(["python3", "-c", "print(1+1)"]).stdout)   # "2\\n"
        sbx.files.write("/workspace/hello.txt", "hi")
"""

from __future__ import annotations

from types import TracebackType

import httpx

from .. import _api
from .._base import DEFAULT_TIMEOUT
from ..models import Health
from ._sender import Sender
from .admin import Nodes, Secrets, Snapshots, Templates, Tenants
from .apps import Agents, Apps
from .sandboxes import Sandboxes
from .state import State


class Client(Sender):
    """Blocking client for a Cloche server.

    Args:
        url: Server URL; defaults to ``$CLOCHE_URL`` or ``http://127.0.0.1:8787``.
        api_key: Tenant or admin API key; defaults to ``$CLOCHE_API_KEY``.
        timeout: Seconds to wait when connecting and for ordinary responses.
        transport: Optional httpx transport (e.g. ``httpx.MockTransport`` in tests).

    Attributes:
        sandboxes: Create, look up and list sandboxes.
        snapshots: List and delete named snapshots of sandboxes' files.
        secrets: Store secrets sandboxes can send (to their hosts) without holding them.
        apps: Deploy apps, whose per-key agents :meth:`agents` reaches.
        tenants: Manage tenants and API keys (admin key required).
        nodes: Inspect worker nodes (admin key required).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, transport=transport)
        self.sandboxes = Sandboxes(self)
        self.snapshots = Snapshots(self)
        self.secrets = Secrets(self)
        self.apps = Apps(self)
        self.tenants = Tenants(self)
        self.nodes = Nodes(self)
        self.templates = Templates(self)

    def agents(self, app: str) -> Agents:
        """The agents of ``app``: ``client.agents("memo")["alice"].invoke(json=...)``."""
        return Agents(self, app)

    def state(self, namespace: str) -> State:
        """The durable KV and log of a state namespace (created by its first write)."""
        return State(self, namespace)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def health(self) -> Health:
        """Check that the server is up (``GET /healthz``); needs no API key."""
        return self._call(_api.health())
