"""Sandbox endpoints: create, look up, list, kill, resize, the lifecycle, network and ports."""

from __future__ import annotations

from collections.abc import Mapping

from .._spec import SandboxSpec
from .._wire import compact, network_body
from ..models import NetworkSpec, NetworkStatus, PortUrls, SandboxInfo
from .call import CREATE_TIMEOUT, TRANSFER_TIMEOUT, Call, sbx
from .responses import parse_items, parse_json, parse_none


def create_sandbox(spec: SandboxSpec) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes``; only the fields given are sent, the rest default server-side.

    ``wait_s`` is how long the create may wait in the admission queue for room (the server
    then answers 503 with ``Retry-After``); the read timeout grows by as much.  ``network``
    is ``"none"``, ``"internet"`` or a policy (see :func:`network_body`); ``isolation``
    is ``"runc"`` or ``"gvisor"``.
    """
    read_timeout = CREATE_TIMEOUT + (spec.wait_s or 0.0)
    return Call("POST", "/v1/sandboxes", parse_json(SandboxInfo), json=spec.body(), read_timeout=read_timeout)


def get_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    """``GET /v1/sandboxes/{id}``."""
    return Call("GET", sbx(sandbox_id), parse_json(SandboxInfo))


def list_sandboxes(state: str | None = None, metadata: Mapping[str, str] | None = None) -> Call[list[SandboxInfo]]:
    """``GET /v1/sandboxes`` filtered by state and exact metadata matches."""
    params: dict[str, str] = compact(state=state)
    for key, value in (metadata or {}).items():
        params[f"metadata.{key}"] = value
    return Call("GET", "/v1/sandboxes", parse_items(SandboxInfo), params=params)


def kill_sandbox(sandbox_id: str) -> Call[None]:
    """``DELETE /v1/sandboxes/{id}``."""
    return Call("DELETE", sbx(sandbox_id), parse_none)


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
        parse_json(SandboxInfo),
        json=body,
        read_timeout=TRANSFER_TIMEOUT if allow_move else CREATE_TIMEOUT,
    )


def set_timeout(sandbox_id: str, timeout_s: float) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/timeout``."""
    return Call("POST", sbx(sandbox_id, "timeout"), parse_json(SandboxInfo), json={"timeout_s": timeout_s})


def pause(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/pause``."""
    return Call("POST", sbx(sandbox_id, "pause"), parse_json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


def resume(sandbox_id: str) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/resume``."""
    return Call("POST", sbx(sandbox_id, "resume"), parse_json(SandboxInfo), read_timeout=CREATE_TIMEOUT)


def hibernate(sandbox_id: str, keep_local: bool = True) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/hibernate?keep_local=...``."""
    return Call(
        "POST",
        sbx(sandbox_id, "hibernate"),
        parse_json(SandboxInfo),
        params={"keep_local": "true" if keep_local else "false"},
        read_timeout=TRANSFER_TIMEOUT,
    )


def fork(sandbox_id: str, name: str | None = None, metadata: Mapping[str, str] | None = None) -> Call[SandboxInfo]:
    """``POST /v1/sandboxes/{id}/fork``: a new sandbox with this one's current files."""
    body = compact(name=name, metadata=dict(metadata) if metadata is not None else None)
    return Call("POST", sbx(sandbox_id, "fork"), parse_json(SandboxInfo), json=body, read_timeout=TRANSFER_TIMEOUT)


def get_network(sandbox_id: str) -> Call[NetworkStatus]:
    """``GET /v1/sandboxes/{id}/network``: the policy in force, the address and the counters."""
    return Call("GET", sbx(sandbox_id, "network"), parse_json(NetworkStatus))


def set_network(sandbox_id: str, network: NetworkSpec) -> Call[NetworkStatus]:
    """``PUT /v1/sandboxes/{id}/network``: replace the policy atomically (live)."""
    return Call("PUT", sbx(sandbox_id, "network"), parse_json(NetworkStatus), json=network_body(network))


def port_urls(sandbox_id: str, port: int, expires_s: int = 3600) -> Call[PortUrls]:
    """``GET /v1/sandboxes/{id}/urls/{port}?expires_s=``: URLs and token of an exposed port.

    ``expires_s`` is the lifetime of the signed URL in the answer.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return Call(
        "GET", sbx(sandbox_id, "urls", str(port)), parse_json(PortUrls), params={"expires_s": str(int(expires_s))}
    )
