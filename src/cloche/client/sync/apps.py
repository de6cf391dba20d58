"""The blocking face of apps and their per-key agents.

Mirrored by :mod:`cloche.client.async_.apps`; the requests live in :mod:`cloche.client._api`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from .. import _api, _flows
from ..models import (
    AgentInfo,
    AgentMove,
    AgentResponse,
    App,
    IdlePolicy,
)
from ._sender import Sender
from .sandboxes import Sandbox

T = TypeVar("T")


class Apps:
    """``client.apps``: deploy the apps whose agents ``client.agents(app)`` reaches."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def deploy(
        self,
        name: str,
        command: Sequence[str],
        template: str | None = None,
        env: Mapping[str, str] | None = None,
        setup: str | Sequence[str] | None = None,
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        max_concurrency: int | None = None,
        startup_timeout_s: float | None = None,
        restart: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        regions: Sequence[str] | None = None,
    ) -> App:
        """Deploy an app, or redeploy it as a new version.

        Every key gets its own sandbox running ``command``, created on its first
        invocation; a redeploy reaches running agents at their next invocation.

        Args:
            name: App name (lowercase letters, digits and ``-``).
            command: The agent's server (argv); it must serve HTTP on the unix socket
                at ``$CLOCHE_AGENT_SOCKET``.
            template: Root file-system template of the agents' sandboxes.
            env: Environment variables of the agents (``CLOCHE_AGENT_KEY`` and
                ``CLOCHE_APP`` are always set).
            setup: Run once in each new instance before the server starts (a shell
                string or an argv list).
            idle: When idle agents are paused and hibernated (server default: pause
                after 60 s, hibernate after 15 min).
            max_concurrency: Invocations delivered at once to one agent (default 1: in
                order, one at a time).
            startup_timeout_s: How long to wait for the agent's socket (default 30).
            restart: In a cluster, when an instance whose node was lost comes back:
                ``"on_request"`` (default, on its next invoke) or ``"always"`` (at once).
            cpu: CPU cores per agent.
            memory_mb: Memory limit per agent in MiB.
            disk_mb: Disk quota per agent in MiB.
            regions: Data residency, in a cluster: the agents run only on nodes in
                these regions, and an invocation when they have no room gets 503
                ``region_full`` instead of a placement elsewhere.

        Example::

            from cloche.examples import memo_app
            client.apps.deploy("memo", **memo_app())
        """
        call = _api.deploy_app(
            name,
            command=command,
            template=template,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            env=env,
            setup=setup,
            idle=idle,
            max_concurrency=max_concurrency,
            startup_timeout_s=startup_timeout_s,
            restart=restart,
            regions=regions,
        )
        return self._client._call(call)

    def list(self) -> list[App]:
        """List this tenant's apps."""
        return self._client._call(_api.list_apps())

    def get(self, name: str) -> App:
        """Describe one app (raises :class:`NotFound`)."""
        return self._client._call(_api.get_app(name))

    def delete(self, name: str, state: bool = False) -> None:
        """Delete an app and every agent's sandbox; with ``state``, their state too."""
        self._client._call(_api.delete_app(name, state))


class Agents:
    """``client.agents(app)``: the agents of one app, one per key; ``agents[key]`` is one."""

    def __init__(self, client: Sender, app: str) -> None:
        self._client = client
        self.app = app

    def __getitem__(self, key: str) -> Agent:
        return Agent(self._client, self.app, key)

    def __repr__(self) -> str:
        return f"Agents(app={self.app!r})"

    def list(self) -> list[AgentInfo]:
        """List the app's agents with their state, sandbox and last activity."""
        return self._client._call(_api.list_agents(self.app))


class Agent:
    """The agent of one key of an app: the address of one user's own instance.

    Nothing is created until the first :meth:`invoke`; the handle holds no connection.
    """

    def __init__(self, client: Sender, app: str, key: str) -> None:
        self._client = client
        self.app = app
        self.key = key

    def __repr__(self) -> str:
        return f"Agent(app={self.app!r}, key={self.key!r})"

    def invoke(
        self,
        body: bytes | str | IO[bytes] = b"",
        *,
        json: Any = _api._NO_JSON,
        path: str = "",
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = _api.INVOKE_TIMEOUT,
    ) -> AgentResponse:
        """Send a request to this key's agent and return its answer, whatever its status.

        The instance is created on first use, woken if paused or hibernated, and its
        server (re)started if needed.

        Args:
            body: The raw request body (``bytes``, text, or a binary file to stream).
            json: A JSON value to send instead of ``body``.
            path: Path below the agent's root (``"v1/chat"`` reaches ``/v1/chat``).
            method: GET, POST, PUT, PATCH or DELETE.
            headers: Extra headers for the agent.
            params: Query parameters for the agent.
            timeout: Seconds to wait for the answer (``None``: forever).

        Returns:
            The agent's status, headers and body (``.json()``, ``.text``, ``.ok``).

        Raises:
            NotFound: No such app.
            ServerError: The agent could not be started or crashed (codes
                ``agent_exited``, ``agent_not_ready``, ``agent_crashed``,
                ``agent_setup_failed``), with the end of its output in the message.
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return self._client._call(call)

    def invoke_stream(
        self,
        body: bytes | str | IO[bytes] = b"",
        *,
        json: Any = _api._NO_JSON,
        path: str = "",
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = _api.INVOKE_TIMEOUT,
    ) -> AgentStream:
        """Like :meth:`invoke`, but stream the answer: iterate for the body's chunks as
        the agent sends them (``timeout`` then bounds the wait between chunks)::

            with agent.invoke_stream(json={"message": "hi"}) as stream:
                print(stream.status_code)
                for chunk in stream:
                    sys.stdout.buffer.write(chunk)
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return AgentStream(self._client, call)

    def info(self) -> AgentInfo:
        """The agent's state, sandbox and last activity (raises :class:`NotFound` before
        its first invocation)."""
        return self._client._call(_api.get_agent(self.app, self.key))

    def sandbox(self) -> Sandbox:
        """A handle on the agent's sandbox (to exec, read files, hibernate, ...)."""
        return Sandbox(self._client, self._client._run(_flows.agent_sandbox(self.app, self.key)))

    def move(self, region: str) -> AgentMove:
        """Move the agent to another region of a cluster: hibernated where it is, its
        files copied to that region's store (only what it lacks), resumed on a node
        there. Invocations meanwhile wait and are then served there.

        Raises:
            InvalidRequest: No live node is in ``region`` (or the server is not a cluster).
            Conflict: The app is pinned to regions that do not include ``region``.
            NotFound: No such app or agent.
        """
        return self._client._call(_api.move_agent(self.app, self.key, region))

    def delete(self, state: bool = False) -> None:
        """Remove the agent's instance (the next invocation starts afresh); with
        ``state``, delete its state too."""
        self._client._call(_api.delete_agent(self.app, self.key, state))


class AgentStream:
    """A streamed agent answer: iterate for ``bytes`` chunks.

    The request is sent when iteration starts or :attr:`status_code`/:attr:`headers` is
    first read; the connection is released at the end, on :meth:`close`, or when a
    ``with`` block exits.
    """

    def __init__(self, client: Sender, call: _api.Call[Any]) -> None:
        self._client = client
        self._call = call
        self._response: httpx.Response | None = None

    def open(self) -> AgentStream:
        """Send the request and wait for the status and headers (idempotent)."""
        if self._response is None:
            self._response = self._client._open(self._call)
        return self

    @property
    def status_code(self) -> int:
        """The agent's HTTP status."""
        return self._opened().status_code

    @property
    def headers(self) -> httpx.Headers:
        """The agent's response headers."""
        return self._opened().headers

    def _opened(self) -> httpx.Response:
        self.open()
        assert self._response is not None
        return self._response

    def __iter__(self) -> Iterator[bytes]:
        response = self._opened()
        try:
            yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._client._transport_error(exc) from exc
        finally:
            response.close()

    def close(self) -> None:
        """Release the connection (stops reading the answer)."""
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> AgentStream:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
