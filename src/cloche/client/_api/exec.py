"""Running things in a sandbox: exec to completion, the exec event stream, Python code, the PTY."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from .._wire import compact
from ..models import CodeResult, ExecResult
from .call import Call, sbx
from .responses import parse_json, parse_none


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
        parse_json(ExecResult),
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
        parse_json(CodeResult),
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
        parse_none,
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
