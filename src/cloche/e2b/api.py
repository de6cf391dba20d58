"""E2B's control-plane API mapped onto cloche's lifecycle and tenancy: what its routes
share. The routes are `sandboxes.py` (create, list), `metrics.py` and `lifecycle.py`
(one sandbox, snapshots, and what cloche does not serve).

The API key comes as `X-API-KEY` (E2B's SDKs) or `Authorization: Bearer`; it is a cloche
key, so a sandbox belongs to that key's tenant, and another tenant's sandbox is a 404
like a missing one. E2B's "paused" is cloche's hibernated (files kept, processes and
memory released); connect and resume wake it. Errors are `{"code", "message"}` as E2B
answers them."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from cloche.constants import MAX_TIMEOUT_S
from cloche.e2b import network as e2b_network
from cloche.e2b.errors import E2bError, answer
from cloche.e2b.state import E2bState, e2b_state
from cloche.e2b.store import E2bRow
from cloche.server.auth import authenticate_key
from cloche.server.context import Context
from cloche.store.db import Tenant

ENVD_VERSION = "0.6.7"  # at or above every feature gate of e2b 2.x (the highest is 0.6.4)
DEFAULT_TIMEOUT_S = 300
FAR_FUTURE = "9999-12-31T23:59:59Z"


class E2bRoute(APIRoute):
    """Every failure leaves as E2B's `{"code": status, "message": ...}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = answer(exc)
                if response is None:
                    raise
                return response

        return route


# ---- auth and bodies --------------------------------------------------------------------


def authenticate(request: Request) -> tuple[E2bState, Context, Tenant]:
    """E2B's SDKs send the cloche key as `X-API-KEY`; cloche's own lookup and rate limit
    take it from there."""
    st = e2b_state(request)
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
    if not key:
        raise E2bError(401, "missing API key (X-API-KEY or Authorization: Bearer)")
    return st, st.c, authenticate_key(request, key)


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise E2bError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise E2bError(400, "request body must be a JSON object")
    return body


def timeout_of(value: Any, default: float | None = DEFAULT_TIMEOUT_S) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise E2bError(400, "timeout must be a non-negative number of seconds")
    if value == 0:
        return default
    return float(min(value, MAX_TIMEOUT_S))


def str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise E2bError(400, f"{what} must be an object of strings")
    return dict(value)


def iso(ts: float | None) -> str:
    if ts is None:
        return FAR_FUTURE
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# ---- views ------------------------------------------------------------------------------


def e2b_state_of(cloche_state: str) -> str:
    return "running" if cloche_state in ("running", "creating") else "paused"


def row_of(st: E2bState, c: Context, tenant: Tenant, sandbox_id: str) -> tuple[Any, E2bRow]:
    view = c.sandboxes.get(tenant, sandbox_id)
    row = st.store.get(sandbox_id)
    if row is None or row.tenant_id != tenant.id:
        row = st.store.ensure(sandbox_id, tenant.id, view.row.template, st.traffic.token(sandbox_id))
    return view, row


def sandbox_domain(c: Context) -> str:
    """Where `get_host(port)` points: `{port}-{id}.{domain}`, served by cloche's ingress."""
    return f"{c.settings.ingress_domain}:{c.settings.port}"


def created_json(row: E2bRow, domain: str) -> dict[str, Any]:
    return {
        "templateID": row.template,
        "alias": row.template,
        "sandboxID": row.sandbox_id,
        "clientID": "local",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": row.access_token,
        "trafficAccessToken": row.traffic_token,
        "domain": domain,
    }


def listed_json(view: Any, row: E2bRow) -> dict[str, Any]:
    rec = view.record
    return {
        "templateID": row.template,
        "alias": row.template,
        "sandboxID": row.sandbox_id,
        "clientID": "local",
        "startedAt": iso(view.row.created_at),
        "endAt": iso(rec.expires_at),
        "cpuCount": max(1, math.ceil(rec.spec.limits.cpu)),
        "memoryMB": rec.spec.limits.memory_mb,
        "diskSizeMB": rec.spec.limits.disk_mb,
        "state": e2b_state_of(rec.state),
        "envdVersion": ENVD_VERSION,
        "metadata": view.row.metadata,
    }


def detail_json(view: Any, row: E2bRow, domain: str) -> dict[str, Any]:
    on_timeout = "pause" if view.record.spec.idle.on_timeout == "hibernate" else "kill"
    policy = view.record.spec.network
    return {
        **listed_json(view, row),
        "envdAccessToken": row.access_token,
        "domain": domain,
        "allowInternetAccess": policy.egress,
        "network": e2b_network.to_e2b(policy),
        "lifecycle": {"onTimeout": on_timeout, "autoResume": row.auto_resume},
    }


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def offset_of(token: str | None) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return max(0, int(data["o"]))
    except (ValueError, KeyError, TypeError):
        raise E2bError(400, "invalid nextToken") from None
