"""What each API endpoint is: method, path, query, body, timeout and response parser.

Every function here returns a :class:`Call` describing one HTTP request and how to turn
its successful response into a Python value.  The sync and async clients execute the very
same ``Call`` objects, so request building and response parsing live in exactly one place
(like httpx's shared request model under ``Client``/``AsyncClient``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import TypeAdapter

from .errors import InvalidRequest
from .models import (
    ApiKey,
    ArchiveResult,
    Entry,
    ExecResult,
    Health,
    NewTenant,
    NodeInfo,
    SandboxInfo,
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


def _compact(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def sbx(sandbox_id: str, *rest: str) -> str:
    """Path of a sandbox (sub)resource, with the id percent-encoded."""
    return "/".join([f"/v1/sandboxes/{quote(sandbox_id, safe='')}", *rest]).rstrip("/")


# --- service -------------------------------------------------------------------------------


def health() -> Call[Health]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", _json(Health))


# --- sandboxes -----------------------------------------------------------------------------


def create_sandbox(
    *,
    template: str | None = None,
    cpu: float | None = None,
    memory_mb: int | None = None,
    disk_mb: int | None = None,
    timeout_s: float | None = None,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes``; only the fields given are sent, the rest default server-side."""
    body = _compact(
        template=template,
        cpu=cpu,
        memory_mb=memory_mb,
        disk_mb=disk_mb,
        timeout_s=timeout_s,
        name=name,
        metadata=dict(metadata) if metadata is not None else None,
        env=dict(env) if env is not None else None,
    )
    return Call("POST", "/v1/sandboxes", _json(SandboxInfo), json=body, read_timeout=CREATE_TIMEOUT)


def get_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    """``GET /v1/sandboxes/{id}``."""
    return Call("GET", sbx(sandbox_id), _json(SandboxInfo))


def list_sandboxes(state: str | None = None, metadata: Mapping[str, str] | None = None) -> Call[list[SandboxInfo]]:
    """``GET /v1/sandboxes`` filtered by state and exact metadata matches."""
    params: dict[str, str] = _compact(state=state)
    for key, value in (metadata or {}).items():
        params[f"metadata.{key}"] = value
    return Call("GET", "/v1/sandboxes", _items(SandboxInfo), params=params)


def kill_sandbox(sandbox_id: str) -> Call[None]:
    """``DELETE /v1/sandboxes/{id}``."""
    return Call("DELETE", sbx(sandbox_id), _none)


def set_timeout(sandbox_id: str, timeout_s: float) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/timeout``."""
    return Call("POST", sbx(sandbox_id, "timeout"), _json(SandboxInfo), json={"timeout_s": timeout_s})


def pause(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/pause``."""
    return Call("POST", sbx(sandbox_id, "pause"), _json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


def resume(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/resume``."""
    return Call("POST", sbx(sandbox_id, "resume"), _json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


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
    return _compact(
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


# --- admin ---------------------------------------------------------------------------------


def create_tenant(
    name: str,
    *,
    max_sandboxes: int | None = None,
    max_cpu: float | None = None,
    max_memory_mb: int | None = None,
) -> Call[NewTenant]:
    """``POST /v1/tenants`` (admin)."""
    body = _compact(name=name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
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


def list_nodes() -> Call[list[NodeInfo]]:
    """``GET /v1/nodes`` (admin)."""
    return Call("GET", "/v1/nodes", _items(NodeInfo))


def dumps(value: Any) -> str:
    """Compact JSON, used for PTY control frames."""
    return json.dumps(value, separators=(",", ":"))
