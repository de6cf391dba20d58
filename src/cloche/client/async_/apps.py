"""The async face of apps and their per-key agents.

It mirrors :mod:`cloche.client.sync.apps` method for method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
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
from ._sender import AsyncSender
from .sandboxes import AsyncSandbox

T = TypeVar("T")


class AsyncApps:
    """``client.apps``: deploy apps (see :class:`cloche.client.sync.Apps`)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def deploy(
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
        """Deploy an app, or redeploy it as a new version; the parameters are those of
        :meth:`cloche.client.sync.Apps.deploy`."""
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
        return await self._client._call(call)

    async def list(self) -> list[App]:
        """List this tenant's apps."""
        return await self._client._call(_api.list_apps())

    async def get(self, name: str) -> App:
        """Describe one app (raises :class:`NotFound`)."""
        return await self._client._call(_api.get_app(name))

    async def delete(self, name: str, state: bool = False) -> None:
        """Delete an app and every agent's sandbox; with ``state``, their state too."""
        await self._client._call(_api.delete_app(name, state))


class AsyncAgents:
    """``client.agents(app)``: the agents of one app; ``agents[key]`` is one."""

    def __init__(self, client: AsyncSender, app: str) -> None:
        self._client = client
        self.app = app

    def __getitem__(self, key: str) -> AsyncAgent:
        return AsyncAgent(self._client, self.app, key)

    def __repr__(self) -> str:
        return f"AsyncAgents(app={self.app!r})"

    async def list(self) -> list[AgentInfo]:
        """List the app's agents with their state, sandbox and last activity."""
        return await self._client._call(_api.list_agents(self.app))


class AsyncAgent:
    """The agent of one key of an app (see :class:`cloche.client.sync.Agent`)."""

    def __init__(self, client: AsyncSender, app: str, key: str) -> None:
        self._client = client
        self.app = app
        self.key = key

    def __repr__(self) -> str:
        return f"AsyncAgent(app={self.app!r}, key={self.key!r})"

    async def invoke(
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
        """Send a request to this key's agent and return its answer, whatever its status;
        see :meth:`cloche.client.sync.Agent.invoke`."""
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return await self._client._call(call)

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
    ) -> AsyncAgentStream:
        """Like :meth:`invoke`, but stream the answer::

        async with agent.invoke_stream(json={"message": "hi"}) as stream:
            print(stream.status_code)
            async for chunk in stream:
                ...
        """
        call = _api.invoke(self.app, self.key, body=body, json=json, path=path, method=method,
                           headers=headers, params=params, timeout=timeout)  # fmt: skip
        return AsyncAgentStream(self._client, call)

    async def info(self) -> AgentInfo:
        """The agent's state, sandbox and last activity (NotFound before its first invocation)."""
        return await self._client._call(_api.get_agent(self.app, self.key))

    async def sandbox(self) -> AsyncSandbox:
        """A handle on the agent's sandbox."""
        return AsyncSandbox(self._client, await self._client._run(_flows.agent_sandbox(self.app, self.key)))

    async def move(self, region: str) -> AgentMove:
        """Move the agent to another region of a cluster: hibernated where it is, its
        files copied to that region's store (only what it lacks), resumed on a node
        there. Invocations meanwhile wait and are then served there.

        Raises:
            InvalidRequest: No live node is in ``region`` (or the server is not a cluster).
            Conflict: The app is pinned to regions that do not include ``region``.
            NotFound: No such app or agent.
        """
        return await self._client._call(_api.move_agent(self.app, self.key, region))

    async def delete(self, state: bool = False) -> None:
        """Remove the agent's instance; with ``state``, delete its state too."""
        await self._client._call(_api.delete_agent(self.app, self.key, state))


class AsyncAgentStream:
    """A streamed agent answer: ``async for chunk in stream`` yields ``bytes``.

    The request is sent by :meth:`open` (``async with`` calls it) or when iteration
    starts; :attr:`status_code` and :attr:`headers` are available once it is open.
    """

    def __init__(self, client: AsyncSender, call: _api.Call[Any]) -> None:
        self._client = client
        self._call = call
        self._response: httpx.Response | None = None

    async def open(self) -> AsyncAgentStream:
        """Send the request and wait for the status and headers (idempotent)."""
        if self._response is None:
            self._response = await self._client._open(self._call)
        return self

    def _opened(self) -> httpx.Response:
        if self._response is None:
            raise RuntimeError("the stream is not open yet: use `async with` or `await stream.open()`")
        return self._response

    @property
    def status_code(self) -> int:
        """The agent's HTTP status."""
        return self._opened().status_code

    @property
    def headers(self) -> httpx.Headers:
        """The agent's response headers."""
        return self._opened().headers

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self.open()
        response = self._opened()
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise self._client._transport_error(exc) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Release the connection (stops reading the answer)."""
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> AsyncAgentStream:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
