"""E2B's create and list (`/sandboxes`, `/v2/sandboxes`): templates by E2B's names,
cloche's own and the tenant's snapshots; the create's Idempotency-Key held under
control's keyed locks; listing with E2B's filters and page tokens."""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloche.control.create import CreateRequest
from cloche.e2b import network as e2b_network
from cloche.e2b.api import (
    E2bRoute,
    authenticate,
    body_of,
    created_json,
    e2b_state_of,
    listed_json,
    offset_of,
    page_token,
    row_of,
    sandbox_domain,
    str_map,  # fmt: skip
    timeout_of,
)
from cloche.e2b.errors import E2bError
from cloche.e2b.state import E2bState
from cloche.server.context import Context
from cloche.store.db import Tenant

router = APIRouter(route_class=E2bRoute, include_in_schema=False)
BASE_ALIASES = {"base", "rki5dems9wqfm4r03t7g"}
CODE_INTERPRETER_ALIASES = {"code-interpreter-v1", "code-interpreter", "nlhz8vlwyupq845jsdg9"}
IDEMPOTENCY_KEY = re.compile(r"^[a-z0-9-]{1,255}$")


# ---- create -------------------------------------------------------------------------------


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("mcp"):
        raise E2bError(400, "MCP gateways are not supported by cloche")
    if body.get("volumeMounts"):
        raise E2bError(400, "volume mounts are not supported by cloche")
    if (body.get("iam") or {}).get("tokens"):
        raise E2bError(400, "workload identity (iam) is not supported by cloche")


def _template(c: Context, tenant: Tenant, name: Any) -> tuple[str, str | None, str]:
    """(cloche template, snapshot id or None, E2B template name)."""
    if not isinstance(name, str) or not name:
        raise E2bError(400, "templateID is required")
    alias = name.split(":", 1)[0] if name.endswith(":default") or name.endswith(":latest") else name
    if alias in BASE_ALIASES or alias in CODE_INTERPRETER_ALIASES:
        return "base", None, alias
    if alias in c.templates.names():
        return alias, None, alias
    snap = c.store.snapshot(alias) or c.store.snapshot_by_name(tenant.id, alias)
    if snap is not None and snap.tenant_id == tenant.id:
        return snap.template, snap.id, alias
    raise E2bError(404, f"template '{name}' not found (cloche serves 'base', 'code-interpreter-v1', its own "
                        f"templates {c.templates.names()} and your snapshots)")  # fmt: skip


def _sweep(st: E2bState, c: Context) -> None:
    """Drop E2B rows of sandboxes that are gone (killed through cloche's API, expired)."""
    if time.monotonic() - st.last_sweep < 60:
        return
    st.last_sweep = time.monotonic()
    for sandbox_id in st.store.sandbox_ids():
        if c.store.sandbox(sandbox_id) is None:
            st.forget(sandbox_id)


def _network(c: Context, body: dict[str, Any]) -> dict[str, Any] | None:
    """E2B's network options as cloche's policy. A create that names none, on a server or
    cluster with networking off, gets the server's default (no network), as cloche's own
    create does, instead of a refusal of the internet access it never asked for."""
    asked = body.get("network") is not None or body.get("allow_internet_access") is not None
    if not asked and not c.sandboxes.node.networking:
        return None
    return e2b_network.to_cloche(body.get("network"), body.get("allow_internet_access"))


async def create(request: Request) -> Response:
    st, c, tenant = authenticate(request)
    _sweep(st, c)
    body = await body_of(request)
    _check_unsupported(body)
    network = _network(c, body)
    template, snapshot, alias = _template(c, tenant, body.get("templateID"))
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise E2bError(400, "Idempotency-Key must be 1-255 lowercase letters, digits or hyphens")
    async with c.sandboxes.locks.hold(f"e2b-idempotency:{tenant.id}/{key}" if key else None):
        if key:
            existing = st.store.by_idempotency_key(tenant.id, key)
            if existing is not None:
                if c.store.sandbox(existing.sandbox_id) is not None:
                    return JSONResponse(created_json(existing, sandbox_domain(c)), 201)
                st.forget(existing.sandbox_id)
        auto_pause = bool(body.get("autoPause"))
        view, _ = await c.sandboxes.create(tenant, CreateRequest(
            template=template, timeout_s=timeout_of(body.get("timeout")), snapshot=snapshot, network=network,
            metadata=str_map(body.get("metadata"), "metadata"), env=str_map(body.get("envVars"), "envVars"),
            on_timeout="hibernate" if auto_pause else "kill",
        ))  # fmt: skip
        resume = body.get("autoResume")
        auto_resume = bool(resume.get("enabled") if isinstance(resume, dict) else resume)
        row = st.store.ensure(view.row.id, tenant.id, alias, st.traffic.token(view.row.id), auto_resume=auto_resume,
                              idempotency_key=key)  # fmt: skip
        return JSONResponse(created_json(row, sandbox_domain(c)), 201)


router.add_api_route("/v2/sandboxes", create, methods=["POST"], status_code=201)
router.add_api_route("/sandboxes", create, methods=["POST"], status_code=201)


# ---- list -----------------------------------------------------------------------------------


def _metadata_filter(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    return {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in urllib.parse.parse_qsl(raw, True)}


def _started_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise E2bError(400, "startedAfter must be an ISO 8601 time") from None


def _matching(st: E2bState, c: Context, tenant: Tenant, request: Request,
              states: set[str]) -> list[dict[str, Any]]:  # fmt: skip
    q = request.query_params
    metadata = _metadata_filter(q.get("metadata"))
    template = q.get("template")
    after = _started_after(q.get("startedAfter"))
    out = []
    for view in c.sandboxes.list(tenant, metadata=metadata or None):
        if e2b_state_of(view.record.state) not in states:
            continue
        if after is not None and view.row.created_at < after:
            continue
        _, row = row_of(st, c, tenant, view.row.id)
        if template and template not in (row.template, view.row.template):
            continue
        out.append(listed_json(view, row))
    return out


async def list_v2(request: Request) -> Response:
    st, c, tenant = authenticate(request)
    q = request.query_params
    states = {s for s in (q.get("state") or "running,paused").split(",") if s}
    bad = states - {"running", "paused"}
    if bad:
        raise E2bError(400, f"unknown state(s) {sorted(bad)}; use running and/or paused")
    items = _matching(st, c, tenant, request, states)
    order = q.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise E2bError(400, "order must be asc or desc")
    items.sort(key=lambda s: (s["startedAt"], s["sandboxID"]), reverse=order == "desc")
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        raise E2bError(400, "limit must be an integer") from None
    limit = max(1, min(limit, 1000))
    start = offset_of(q.get("nextToken"))
    page = items[start : start + limit]
    headers = {"x-next-token": page_token(start + limit)} if start + limit < len(items) else {}
    return JSONResponse(page, headers=headers)


async def list_v1(request: Request) -> Response:
    st, c, tenant = authenticate(request)
    return JSONResponse(_matching(st, c, tenant, request, {"running"}))


router.add_api_route("/v2/sandboxes", list_v2, methods=["GET"])
router.add_api_route("/sandboxes", list_v1, methods=["GET"])
