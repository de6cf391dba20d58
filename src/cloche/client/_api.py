"""What each API endpoint is: method, path, query, body, timeout and response parser.

Every function here returns a :class:`Call` describing one HTTP request and how to turn
its successful response into a Python value.  The sync and async clients execute the very
same ``Call`` objects, so request building and response parsing live in exactly one place
(like httpx's shared request model under ``Client``/``AsyncClient``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import TypeAdapter

from ._spec import SandboxSpec
from ._wire import compact, idle_body, network_body
from .errors import InvalidRequest
from .models import (
    AgentInfo,
    AgentResponse,
    ApiKey,
    App,
    ArchiveResult,
    BatchResult,
    CodeResult,
    Entry,
    ExecResult,
    Health,
    IdlePolicy,
    KeyPage,
    LogEntry,
    LogPage,
    NetworkSpec,
    NetworkStatus,
    NewTenant,
    NodeInfo,
    PortUrls,
    SandboxInfo,
    SecretInfo,
    SecretKeyRotation,
    SnapshotInfo,
    StateValue,
    TemplateInfo,
    Tenant,
    WriteResult,
)

T = TypeVar("T")

Body = bytes | IO[bytes]
"""A request body: bytes in memory or a binary file object to stream."""


class _Default:
    """Sentinel type: use the client's configured timeout."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
TRANSFER_TIMEOUT = 600.0
"""Read timeout for bulk transfers (files, archives): the server may work a while."""
CREATE_TIMEOUT = 180.0
"""Read timeout for creating a sandbox: a cold start without a warm pool takes seconds."""
INVOKE_TIMEOUT = 600.0
"""Default read timeout of an agent invocation: it may create, wake and start the agent."""
LONG_POLL_S = 20.0
"""The longest single log long poll the server accepts; longer waits poll again."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request plus the parser for its successful response.

    Attributes:
        method: HTTP method.
        path: URL path below the base URL, already percent-encoded.
        params: Query parameters.
        json: JSON body (mutually exclusive with ``content``).
        content: Raw body, bytes or a binary file object.
        content_type: ``Content-Type`` for ``content``.
        read_timeout: Seconds to wait for the response, ``None`` to wait forever, or
            :data:`DEFAULT` for the client's timeout.  Never below the client's timeout.
        precheck: Validates the response headers before the body is read (so e.g. a
            directory listing of a large file does not download it).
        parse: Turns the successful, fully read response into the result.
        headers: Extra request headers.
        passthrough: Hand any status to ``parse`` (an agent's own answer), raising only
            for the server's own error envelope (see :func:`is_server_error`).
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    content: Body | None = None
    content_type: str | None = None
    read_timeout: float | None | _Default = DEFAULT
    precheck: Callable[[httpx.Response], None] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    passthrough: bool = False


def _json(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = TypeAdapter(model)

    def parse(response: httpx.Response) -> Any:
        return adapter.validate_json(response.content)

    return parse


def _items(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = TypeAdapter(list[model])

    def parse(response: httpx.Response) -> Any:
        return adapter.validate_python(response.json()["items"])

    return parse


def _none(response: httpx.Response) -> None:
    return None


def _raw(response: httpx.Response) -> bytes:
    return response.content


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _seg(value: str) -> str:
    """One percent-encoded path segment."""
    return quote(value, safe="")


def sbx(sandbox_id: str, *rest: str) -> str:
    """Path of a sandbox (sub)resource, with the id percent-encoded."""
    return "/".join([f"/v1/sandboxes/{quote(sandbox_id, safe='')}", *rest]).rstrip("/")


# --- service -------------------------------------------------------------------------------


def health() -> Call[Health]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", _json(Health))


# --- sandboxes -----------------------------------------------------------------------------


def create_sandbox(spec: SandboxSpec) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes``; only the fields given are sent, the rest default server-side.

    ``wait_s`` is how long the create may wait in the admission queue for room (the server
    then answers 503 with ``Retry-After``); the read timeout grows by as much.  ``network``
    is ``"none"``, ``"internet"`` or a policy (see :func:`network_body`); ``isolation``
    is ``"runc"`` or ``"gvisor"``.
    """
    read_timeout = CREATE_TIMEOUT + (spec.wait_s or 0.0)
    return Call("POST", "/v1/sandboxes", _json(SandboxInfo), json=spec.body(), read_timeout=read_timeout)


def get_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    """``GET /v1/sandboxes/{id}``."""
    return Call("GET", sbx(sandbox_id), _json(SandboxInfo))


def list_sandboxes(state: str | None = None, metadata: Mapping[str, str] | None = None) -> Call[list[SandboxInfo]]:
    """``GET /v1/sandboxes`` filtered by state and exact metadata matches."""
    params: dict[str, str] = compact(state=state)
    for key, value in (metadata or {}).items():
        params[f"metadata.{key}"] = value
    return Call("GET", "/v1/sandboxes", _items(SandboxInfo), params=params)


def kill_sandbox(sandbox_id: str) -> Call[None]:
    """``DELETE /v1/sandboxes/{id}``."""
    return Call("DELETE", sbx(sandbox_id), _none)


def resize_sandbox(
    sandbox_id: str,
    *,
    cpu: float | None = None,
    memory_mb: int | None = None,
    pids: int | None = None,
    allow_move: bool = False,
) -> Call[SandboxInfo]:
    """``PATCH /v1/sandboxes/{id}``: change cpu, memory and pids limits in place.

    Only the limits given are sent; ``allow_move`` only when true.  Moving goes through
    hibernate and resume, so the read timeout is that of a transfer then.
    """
    body = compact(cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=True if allow_move else None)
    return Call(
        "PATCH",
        sbx(sandbox_id),
        _json(SandboxInfo),
        json=body,
        read_timeout=TRANSFER_TIMEOUT if allow_move else CREATE_TIMEOUT,
    )


def set_timeout(sandbox_id: str, timeout_s: float) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/timeout``."""
    return Call("POST", sbx(sandbox_id, "timeout"), _json(SandboxInfo), json={"timeout_s": timeout_s})


def pause(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/pause``."""
    return Call("POST", sbx(sandbox_id, "pause"), _json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


def resume(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/resume``."""
    return Call("POST", sbx(sandbox_id, "resume"), _json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


def hibernate(sandbox_id: str, keep_local: bool = True) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/hibernate?keep_local=...``."""
    return Call(
        "POST",
        sbx(sandbox_id, "hibernate"),
        _json(SandboxInfo),
        params={"keep_local": "true" if keep_local else "false"},
        read_timeout=TRANSFER_TIMEOUT,
    )


def fork(sandbox_id: str, name: str | None = None, metadata: Mapping[str, str] | None = None) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/fork``: a new sandbox with this one's current files."""
    body = compact(name=name, metadata=dict(metadata) if metadata is not None else None)
    return Call("POST", sbx(sandbox_id, "fork"), _json(SandboxInfo), json=body, read_timeout=TRANSFER_TIMEOUT)


# --- network -------------------------------------------------------------------------------


def get_network(sandbox_id: str) -> Call[NetworkStatus]:
    """``GET /v1/sandboxes/{id}/network``: the policy in force, the address and the counters."""
    return Call("GET", sbx(sandbox_id, "network"), _json(NetworkStatus))


def set_network(sandbox_id: str, network: NetworkSpec) -> Call[NetworkStatus]:
    """``PUT /v1/sandboxes/{id}/network``: replace the policy atomically (live)."""
    return Call("PUT", sbx(sandbox_id, "network"), _json(NetworkStatus), json=network_body(network))


def port_urls(sandbox_id: str, port: int, expires_s: int = 3600) -> Call[PortUrls]:
    """``GET /v1/sandboxes/{id}/urls/{port}?expires_s=``: URLs and token of an exposed port.

    ``expires_s`` is the lifetime of the signed URL in the answer.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return Call("GET", sbx(sandbox_id, "urls", str(port)), _json(PortUrls), params={"expires_s": str(int(expires_s))})


# --- snapshots -----------------------------------------------------------------------------


def create_snapshot(sandbox_id: str, name: str) -> Call[SnapshotInfo]:
    """``POST /v1/sandboxes/{id}/snapshots``: save the sandbox's current files as ``name``."""
    return Call(
        "POST",
        sbx(sandbox_id, "snapshots"),
        _json(SnapshotInfo),
        json={"name": name},
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_snapshots() -> Call[list[SnapshotInfo]]:
    """``GET /v1/snapshots``."""
    return Call("GET", "/v1/snapshots", _items(SnapshotInfo))


def get_snapshot(snapshot_id: str) -> Call[SnapshotInfo]:
    """``GET /v1/snapshots/{id}``."""
    return Call("GET", f"/v1/snapshots/{_seg(snapshot_id)}", _json(SnapshotInfo))


def delete_snapshot(snapshot_id: str) -> Call[None]:
    """``DELETE /v1/snapshots/{id}``."""
    return Call("DELETE", f"/v1/snapshots/{_seg(snapshot_id)}", _none)


# --- secrets -------------------------------------------------------------------------------


def create_secret(name: str, value: str, hosts: Sequence[str]) -> Call[SecretInfo]:
    """``POST /v1/secrets``: store ``value`` (encrypted), sendable only to ``hosts``."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names, not a string")
    return Call("POST", "/v1/secrets", _json(SecretInfo), json={"name": name, "value": value, "hosts": list(hosts)})


def list_secrets() -> Call[list[SecretInfo]]:
    """``GET /v1/secrets``: names and hosts, never values."""
    return Call("GET", "/v1/secrets", _items(SecretInfo))


def get_secret(name: str) -> Call[SecretInfo]:
    """``GET /v1/secrets/{name}``."""
    return Call("GET", f"/v1/secrets/{_seg(name)}", _json(SecretInfo))


def update_secret(name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> Call[SecretInfo]:
    """``PUT /v1/secrets/{name}``: replace the value and/or the hosts (both: create if missing)."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names, not a string")
    body = compact(value=value, hosts=None if hosts is None else list(hosts))
    return Call("PUT", f"/v1/secrets/{_seg(name)}", _json(SecretInfo), json=body)


def delete_secret(name: str) -> Call[None]:
    """``DELETE /v1/secrets/{name}``."""
    return Call("DELETE", f"/v1/secrets/{_seg(name)}", _none)


def rotate_secret_key(drop_old: bool = False) -> Call[SecretKeyRotation]:
    """``POST /v1/secrets/rotate-key`` (admin): re-encrypt every secret under a new key."""
    params = {"drop_old": "true"} if drop_old else None
    return Call("POST", "/v1/secrets/rotate-key", _json(SecretKeyRotation), params=params)


# --- exec ----------------------------------------------------------------------------------


def exec_body(
    cmd: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The JSON body shared by ``exec`` and ``exec/stream``."""
    if not isinstance(cmd, str):
        cmd = list(cmd)
        if not all(isinstance(arg, str) for arg in cmd):
            raise TypeError("cmd must be a string or a sequence of strings")
    return compact(
        cmd=cmd,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=stdin,
        timeout_s=timeout_s,
    )


def _exec_read_timeout(timeout_s: float | None) -> float | None:
    # Without a command timeout the command may legitimately run for a long time.
    return None if timeout_s is None else timeout_s + 30.0


def exec_(
    sandbox_id: str,
    cmd: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    timeout_s: float | None = None,
) -> Call[ExecResult]:
    """``POST /v1/sandboxes/{id}/exec``: run to completion and collect output."""
    body = exec_body(cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s)
    return Call(
        "POST",
        sbx(sandbox_id, "exec"),
        _json(ExecResult),
        json=body,
        read_timeout=_exec_read_timeout(timeout_s),
    )


def run_code(
    sandbox_id: str, code: str, *, env: Mapping[str, str] | None = None, timeout_s: float | None = None
) -> Call[CodeResult]:
    """``POST /v1/sandboxes/{id}/code``: run Python in the sandbox's stateful kernel."""
    body: dict[str, Any] = {"code": code, "env": dict(env or {})}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return Call(
        "POST",
        sbx(sandbox_id, "code"),
        _json(CodeResult),
        json=body,
        read_timeout=_exec_read_timeout(timeout_s),
    )


def exec_stream(
    sandbox_id: str,
    cmd: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    timeout_s: float | None = None,
) -> Call[None]:
    """``POST /v1/sandboxes/{id}/exec/stream``; the client decodes the event stream itself."""
    body = exec_body(cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s)
    return Call(
        "POST",
        sbx(sandbox_id, "exec", "stream"),
        _none,
        json=body,
        headers={"Accept": "text/event-stream"},
        read_timeout=_exec_read_timeout(timeout_s),
    )


def pty_url(
    base_url: str,
    sandbox_id: str,
    *,
    cmd: str | None = None,
    rows: int = 24,
    cols: int = 80,
    cwd: str | None = None,
    token: str | None = None,
) -> str:
    """WebSocket URL of ``/v1/sandboxes/{id}/pty`` (``http`` becomes ``ws``).

    ``cmd`` is a shell-quoted command line; without it the server starts a login shell.
    """
    query = {"rows": str(rows), "cols": str(cols)}
    if cmd:
        query["cmd"] = cmd
    if cwd:
        query["cwd"] = cwd
    if token:
        query["token"] = token
    ws_base = "ws" + base_url.removeprefix("http") if base_url.startswith("http") else base_url
    return f"{ws_base}{sbx(sandbox_id, 'pty')}?{urlencode(query)}"


# --- files ---------------------------------------------------------------------------------


def _not_a_directory(path: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        if not _is_json(response):
            raise InvalidRequest(400, "not_a_directory", f"{path} is not a directory")

    return check


def _not_json_listing(path: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        if _is_json(response):
            raise InvalidRequest(400, "is_a_directory", f"{path} is a directory")

    return check


def _entries(response: httpx.Response) -> list[Entry]:
    return TypeAdapter(list[Entry]).validate_python(response.json()["entries"])


def read_file(sandbox_id: str, path: str) -> Call[bytes]:
    """``GET .../files?path=P`` for a regular file: its raw bytes."""
    return Call(
        "GET",
        sbx(sandbox_id, "files"),
        _raw,
        params={"path": path},
        precheck=_not_json_listing(path),
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_dir(sandbox_id: str, path: str) -> Call[list[Entry]]:
    """``GET .../files?path=P`` for a directory: its entries."""
    return Call(
        "GET",
        sbx(sandbox_id, "files"),
        _entries,
        params={"path": path},
        precheck=_not_a_directory(path),
    )


def write_file(sandbox_id: str, path: str, data: bytes | str | IO[bytes]) -> Call[WriteResult]:
    """``PUT .../files?path=P`` with the raw content (``str`` is encoded as UTF-8)."""
    content = data.encode() if isinstance(data, str) else data
    return Call(
        "PUT",
        sbx(sandbox_id, "files"),
        _json(WriteResult),
        params={"path": path},
        content=content,
        content_type="application/octet-stream",
        read_timeout=TRANSFER_TIMEOUT,
    )


def stat(sandbox_id: str, path: str) -> Call[Entry]:
    """``GET .../files/stat?path=P``."""
    return Call("GET", sbx(sandbox_id, "files", "stat"), _json(Entry), params={"path": path})


def mkdir(sandbox_id: str, path: str) -> Call[Entry]:
    """``POST .../files/mkdir``."""
    return Call("POST", sbx(sandbox_id, "files", "mkdir"), _json(Entry), json={"path": path})


def remove(sandbox_id: str, path: str, recursive: bool = False) -> Call[None]:
    """``DELETE .../files?path=P&recursive=...``."""
    return Call(
        "DELETE",
        sbx(sandbox_id, "files"),
        _none,
        params={"path": path, "recursive": "true" if recursive else "false"},
    )


def rename(sandbox_id: str, src: str, dst: str) -> Call[Entry]:
    """``POST .../files/rename``."""
    return Call("POST", sbx(sandbox_id, "files", "rename"), _json(Entry), json={"src": src, "dst": dst})


def upload_tar(sandbox_id: str, path: str, data: Body) -> Call[ArchiveResult]:
    """``PUT .../archive?path=DIR`` with a tar or tar.gz body; extracts into ``DIR``."""
    return Call(
        "PUT",
        sbx(sandbox_id, "archive"),
        _json(ArchiveResult),
        params={"path": path},
        content=data,
        content_type="application/x-tar",
        read_timeout=TRANSFER_TIMEOUT,
    )


def download_tar(sandbox_id: str, path: str) -> Call[bytes]:
    """``GET .../archive?path=DIR``: a tar of ``DIR``."""
    return Call(
        "GET",
        sbx(sandbox_id, "archive"),
        _raw,
        params={"path": path},
        read_timeout=TRANSFER_TIMEOUT,
    )


# --- apps and agents -----------------------------------------------------------------------


def _app(name: str, *rest: str) -> str:
    return "/".join([f"/v1/apps/{_seg(name)}", *rest]).rstrip("/")


def _agent(app: str, key: str, *rest: str) -> str:
    return _app(app, "agents", _seg(key), *rest)


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
    )
    return Call("PUT", _app(name), _json(App), json=body)


def list_apps() -> Call[list[App]]:
    """``GET /v1/apps``."""
    return Call("GET", "/v1/apps", _items(App))


def get_app(name: str) -> Call[App]:
    """``GET /v1/apps/{app}``."""
    return Call("GET", _app(name), _json(App))


def delete_app(name: str, state: bool = False) -> Call[None]:
    """``DELETE /v1/apps/{app}?state=...``: the app and every agent (and their state)."""
    return Call(
        "DELETE",
        _app(name),
        _none,
        params={"state": "true" if state else "false"},
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_agents(app: str) -> Call[list[AgentInfo]]:
    """``GET /v1/apps/{app}/agents``."""
    return Call("GET", _app(app, "agents"), _items(AgentInfo))


def get_agent(app: str, key: str) -> Call[AgentInfo]:
    """``GET /v1/apps/{app}/agents/{key}``."""
    return Call("GET", _agent(app, key), _json(AgentInfo))


def delete_agent(app: str, key: str, state: bool = False) -> Call[None]:
    """``DELETE /v1/apps/{app}/agents/{key}?state=...``."""
    return Call("DELETE", _agent(app, key), _none, params={"state": "true" if state else "false"})


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


def is_server_error(response: httpx.Response) -> bool:
    """Whether a (read) error response is cloche's own rather than an agent's answer.

    The server's errors are exactly ``{"error": {"code": str, "message": str}}``; an
    agent that answers with that very shape is treated as a server error too.
    """
    if response.status_code < 400 or not _is_json(response):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    err = body["error"]
    return set(err) == {"code", "message"} and all(isinstance(v, str) for v in err.values())


def may_be_server_error(response: httpx.Response) -> bool:
    """Cheap pre-check on headers only: could this (unread) response be a server error?"""
    if response.status_code < 400 or not _is_json(response):
        return False
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= 65536


# --- state ---------------------------------------------------------------------------------


def _ns(namespace: str, *rest: str) -> str:
    return "/".join([f"/v1/state/{_seg(namespace)}", *rest])


def _kv(namespace: str, key: str) -> str:
    if not key:
        raise ValueError("a state key must not be empty")
    return _ns(namespace, "kv", quote(key, safe="/"))


def _version(etag: str | None) -> int:
    tag = (etag or "").strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ValueError(f"missing or malformed ETag {etag!r}")
    return int(tag)


def _conditions(if_match: int | None, if_none_match: bool) -> dict[str, str]:
    if if_match is not None and if_none_match:
        raise ValueError("if_match and if_none_match cannot be combined")
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = f'"{int(if_match)}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    return headers


def kv_get(namespace: str, key: str) -> Call[StateValue]:
    """``GET /v1/state/{ns}/kv/{key}``: the raw value and its version (from the ETag)."""

    def parse(response: httpx.Response) -> StateValue:
        expires = response.headers.get("x-cloche-expires-at")
        return StateValue(
            key=key,
            value=response.content,
            version=_version(response.headers.get("etag")),
            expires_at=float(expires) if expires else None,  # type: ignore[arg-type]
        )

    return Call("GET", _kv(namespace, key), parse)


def kv_put(
    namespace: str,
    key: str,
    value: bytes | str,
    *,
    if_match: int | None = None,
    if_none_match: bool = False,
    ttl_s: float | None = None,
) -> Call[int]:
    """``PUT /v1/state/{ns}/kv/{key}`` with the raw value; parses the new version."""
    return Call(
        "PUT",
        _kv(namespace, key),
        lambda r: int(r.json()["version"]),
        params={"ttl_s": str(ttl_s)} if ttl_s is not None else None,
        content=value.encode() if isinstance(value, str) else bytes(value),
        content_type="application/octet-stream",
        headers=_conditions(if_match, if_none_match),
    )


def kv_delete(namespace: str, key: str, *, if_match: int | None = None) -> Call[None]:
    """``DELETE /v1/state/{ns}/kv/{key}`` (idempotent; ``If-Match`` makes it conditional)."""
    return Call("DELETE", _kv(namespace, key), _none, headers=_conditions(if_match, False))


def kv_list(namespace: str, prefix: str = "", cursor: str | None = None, limit: int = 100) -> Call[KeyPage]:
    """``GET /v1/state/{ns}/kv?prefix=&cursor=&limit=``: one page of live keys."""
    params = compact(prefix=prefix, cursor=cursor, limit=str(limit))
    return Call("GET", _ns(namespace, "kv"), _json(KeyPage), params=params)


def _batch_op(i: int, op: Mapping[str, Any]) -> dict[str, Any]:
    wire = dict(op)
    if "op" not in wire or "key" not in wire:
        raise ValueError(f"ops[{i}] needs 'op' and 'key'")
    value = wire.pop("value", None)
    if isinstance(value, bytes | bytearray | memoryview):
        wire["value_b64"] = base64.b64encode(bytes(value)).decode()
    elif value is not None:
        wire["value"] = str(value)
    return {k: v for k, v in wire.items() if v is not None and v is not False}


def kv_batch(namespace: str, ops: Sequence[Mapping[str, Any]]) -> Call[list[BatchResult]]:
    """``POST /v1/state/{ns}/batch``: all operations in one transaction, or none."""
    body = {"ops": [_batch_op(i, op) for i, op in enumerate(ops)]}
    adapter = TypeAdapter(list[BatchResult])
    return Call("POST", _ns(namespace, "batch"), lambda r: adapter.validate_python(r.json()["results"]), json=body)


def log_append(namespace: str, data: bytes | str, *, idempotency_key: str | None = None) -> Call[int]:
    """``POST /v1/state/{ns}/log`` with the raw entry; parses its sequence number."""
    return Call(
        "POST",
        _ns(namespace, "log"),
        lambda r: int(r.json()["seq"]),
        content=data.encode() if isinstance(data, str) else bytes(data),
        content_type="application/octet-stream",
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
    )


def _log_page(response: httpx.Response) -> LogPage:
    body = response.json()
    items = [
        LogEntry(
            seq=item["seq"],
            data=base64.b64decode(item["data_b64"]) if "data_b64" in item else item["data"].encode(),
        )
        for item in body["items"]
    ]
    return LogPage(items=items, last_seq=body.get("last_seq", 0), first_seq=body.get("first_seq", 0))


def log_read(namespace: str, after: int = 0, limit: int = 100, wait_s: float = 0) -> Call[LogPage]:
    """``GET /v1/state/{ns}/log?after=&limit=&wait_s=`` (entries as base64, decoded to bytes)."""
    params = {"after": str(after), "limit": str(limit), "encoding": "base64"}
    if wait_s:
        params["wait_s"] = str(wait_s)
    return Call(
        "GET",
        _ns(namespace, "log"),
        _log_page,
        params=params,
        read_timeout=wait_s + 30 if wait_s else DEFAULT,
    )


def log_trim(namespace: str, upto: int) -> Call[int]:
    """``POST /v1/state/{ns}/log/trim``: drop entries up to ``upto``; parses ``first_seq``."""
    return Call("POST", _ns(namespace, "log", "trim"), lambda r: int(r.json()["first_seq"]), json={"upto": upto})


def grant(namespace: str, sandbox_id: str) -> Call[None]:
    """``PUT /v1/state/{ns}/grants/{sandbox_id}``."""
    return Call("PUT", _ns(namespace, "grants", _seg(sandbox_id)), _none)


def revoke(namespace: str, sandbox_id: str) -> Call[None]:
    """``DELETE /v1/state/{ns}/grants/{sandbox_id}``."""
    return Call("DELETE", _ns(namespace, "grants", _seg(sandbox_id)), _none)


def list_grants(namespace: str) -> Call[list[str]]:
    """``GET /v1/state/{ns}/grants``: the ids of the sandboxes granted the namespace."""
    return Call("GET", _ns(namespace, "grants"), lambda r: [str(i) for i in r.json()["sandboxes"]])


# --- admin ---------------------------------------------------------------------------------


def create_tenant(
    name: str,
    *,
    max_sandboxes: int | None = None,
    max_cpu: float | None = None,
    max_memory_mb: int | None = None,
) -> Call[NewTenant]:
    """``POST /v1/tenants`` (admin)."""
    body = compact(name=name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
    return Call("POST", "/v1/tenants", _json(NewTenant), json=body)


def list_tenants() -> Call[list[Tenant]]:
    """``GET /v1/tenants`` (admin)."""
    return Call("GET", "/v1/tenants", _items(Tenant))


def create_key(tenant_id: str) -> Call[ApiKey]:
    """``POST /v1/tenants/{id}/keys`` (admin)."""
    return Call("POST", f"/v1/tenants/{quote(tenant_id, safe='')}/keys", _json(ApiKey))


def revoke_key(tenant_id: str, key_id: str) -> Call[None]:
    """``DELETE /v1/tenants/{id}/keys/{key_id}`` (admin)."""
    return Call("DELETE", f"/v1/tenants/{quote(tenant_id, safe='')}/keys/{quote(key_id, safe='')}", _none)


def list_templates() -> Call[list[TemplateInfo]]:
    """``GET /v1/templates``."""
    return Call("GET", "/v1/templates", _items(TemplateInfo))


def import_template(name: str, archive: Body, on_base: bool = False) -> Call[TemplateInfo]:
    """``PUT /v1/templates/{name}`` (admin): a rootfs tarball, optionally over `base`."""
    return Call("PUT", f"/v1/templates/{quote(name, safe='')}", _json(TemplateInfo),
                params={"on_base": "true"} if on_base else None, content=archive,
                content_type="application/x-tar", read_timeout=TRANSFER_TIMEOUT)  # fmt: skip


def delete_template(name: str) -> Call[None]:
    """``DELETE /v1/templates/{name}`` (admin)."""
    return Call("DELETE", f"/v1/templates/{quote(name, safe='')}", _none)


def list_nodes() -> Call[list[NodeInfo]]:
    """``GET /v1/nodes`` (admin)."""
    return Call("GET", "/v1/nodes", _items(NodeInfo))


def dumps(value: Any) -> str:
    """Compact JSON, used for PTY control frames."""
    return json.dumps(value, separators=(",", ":"))
