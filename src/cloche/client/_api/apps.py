"""App and agent endpoints: deploy, list, look up and delete them, and invoke an agent.

An invocation hands back the agent's own answer, whatever its status (``passthrough``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, Any
from urllib.parse import quote

import httpx

from .._wire import compact, idle_body
from ..models import AgentInfo, AgentMove, AgentResponse, App, IdlePolicy
from .call import INVOKE_TIMEOUT, TRANSFER_TIMEOUT, Body, Call, seg
from .responses import parse_items, parse_json, parse_none


def _app(name: str, *rest: str) -> str:
    return "/".join([f"/v1/apps/{seg(name)}", *rest]).rstrip("/")


def _agent(app: str, key: str, *rest: str) -> str:
    return _app(app, "agents", seg(key), *rest)


def deploy_app(
    name: str,
    *,
    command: Sequence[str],
    template: str | None = None,
    cpu: float | None = None,
    memory_mb: int | None = None,
    disk_mb: int | None = None,
    env: Mapping[str, str] | None = None,
    setup: str | Sequence[str] | None = None,
    idle: IdlePolicy | Mapping[str, float | None] | None = None,
    max_concurrency: int | None = None,
    startup_timeout_s: float | None = None,
    restart: str | None = None,
    regions: Sequence[str] | None = None,
) -> Call[App]:
    """``PUT /v1/apps/{app}``: deploy or redeploy; only the fields given are sent."""
    if isinstance(command, str):
        raise TypeError("command must be an argv list, e.g. ['python3', 'agent.py']")
    body = compact(
        command=list(command),
        template=template,
        cpu=cpu,
        memory_mb=memory_mb,
        disk_mb=disk_mb,
        env=dict(env) if env is not None else None,
        setup=setup if setup is None or isinstance(setup, str) else list(setup),
        idle=idle_body(idle),
        max_concurrency=max_concurrency,
        startup_timeout_s=startup_timeout_s,
        restart=restart,
        regions=list(regions) if regions is not None else None,
    )
    return Call("PUT", _app(name), parse_json(App), json=body)


def list_apps() -> Call[list[App]]:
    """``GET /v1/apps``."""
    return Call("GET", "/v1/apps", parse_items(App))


def get_app(name: str) -> Call[App]:
    """``GET /v1/apps/{app}``."""
    return Call("GET", _app(name), parse_json(App))


def delete_app(name: str, state: bool = False) -> Call[None]:
    """``DELETE /v1/apps/{app}?state=...``: the app and every agent (and their state)."""
    return Call(
        "DELETE",
        _app(name),
        parse_none,
        params={"state": "true" if state else "false"},
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_agents(app: str) -> Call[list[AgentInfo]]:
    """``GET /v1/apps/{app}/agents``."""
    return Call("GET", _app(app, "agents"), parse_items(AgentInfo))


def get_agent(app: str, key: str) -> Call[AgentInfo]:
    """``GET /v1/apps/{app}/agents/{key}``."""
    return Call("GET", _agent(app, key), parse_json(AgentInfo))


def delete_agent(app: str, key: str, state: bool = False) -> Call[None]:
    """``DELETE /v1/apps/{app}/agents/{key}?state=...``."""
    return Call("DELETE", _agent(app, key), parse_none, params={"state": "true" if state else "false"})


def move_agent(app: str, key: str, region: str) -> Call[AgentMove]:
    """``POST /v1/apps/{app}/agents/{key}/move``: resume the agent in ``region`` (cluster mode)."""
    return Call("POST", _agent(app, key, "move"), parse_json(AgentMove), json={"region": region},
                read_timeout=TRANSFER_TIMEOUT)  # fmt: skip


_NO_JSON: Any = object()
"""Sentinel: no JSON body given (``None`` is a valid JSON body: ``null``)."""


def _agent_response(response: httpx.Response) -> AgentResponse:
    return AgentResponse(status_code=response.status_code, headers=response.headers, content=response.content)


def invoke(
    app: str,
    key: str,
    *,
    body: bytes | str | IO[bytes] = b"",
    json: Any = _NO_JSON,
    path: str = "",
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout: float | None = INVOKE_TIMEOUT,
) -> Call[AgentResponse]:
    """``{method} /v1/apps/{app}/agents/{key}/invoke[/path]``: the agent's own answer.

    ``json`` (any JSON value) replaces ``body``; a bytes body without a ``Content-Type``
    header is sent as ``application/octet-stream``, text as ``text/plain``.
    """
    method = method.upper()
    sub = quote(path.lstrip("/"), safe="/:@!$&'()*+,;=-._~")
    url = _agent(app, key, "invoke") + (f"/{sub}" if sub else "")
    sent = dict(headers or {})
    has_type = any(k.lower() == "content-type" for k in sent)
    if json is not _NO_JSON:
        content: Body = dumps(json).encode()
        content_type = None if has_type else "application/json"
    else:
        content = body.encode() if isinstance(body, str) else body
        default = "text/plain; charset=utf-8" if isinstance(body, str) else "application/octet-stream"
        content_type = None if has_type else default
    if method in ("GET", "DELETE") and isinstance(content, bytes) and not content:
        content_type = None
    return Call(
        method,
        url,
        _agent_response,
        params=dict(params) if params else None,
        content=content,
        content_type=content_type,
        headers=sent,
        read_timeout=timeout,
        passthrough=True,
    )


def dumps(value: Any) -> str:
    """Compact JSON, the body of an invocation's ``json=``."""
    return json.dumps(value, separators=(",", ":"))
