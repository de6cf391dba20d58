"""E2B's control-plane API mapped onto cloche's lifecycle and tenancy.

The API key comes as `X-API-KEY` (E2B's SDKs) or `Authorization: Bearer`; it is a cloche
key, so a sandbox belongs to that key's tenant, and another tenant's sandbox is a 404
like a missing one. E2B's "paused" is cloche's hibernated (files kept, processes and
memory released); connect and resume wake it. Errors are `{"code", "message"}` as E2B
answers them."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from cloche.constants import MAX_TIMEOUT_S
from cloche.control.create import CreateRequest
from cloche.control.errors import KNOWN, ApiError, problem
from cloche.e2b import network as e2b_network
from cloche.e2b.errors import E2bError, answer
from cloche.e2b.state import E2bState, e2b_state
from cloche.e2b.store import E2bRow
from cloche.node.errors import RuntimeFailure
from cloche.scheduler.local import anon_memory_mb
from cloche.server.auth import authenticate_key
from cloche.server.context import Context
from cloche.store.db import Tenant

ENVD_VERSION = "0.6.7"  # at or above every feature gate of e2b 2.x (the highest is 0.6.4)
DEFAULT_TIMEOUT_S = 300
BASE_ALIASES = {"base", "rki5dems9wqfm4r03t7g"}
CODE_INTERPRETER_ALIASES = {"code-interpreter-v1", "code-interpreter", "nlhz8vlwyupq845jsdg9"}
IDEMPOTENCY_KEY = re.compile(r"^[a-z0-9-]{1,255}$")
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


router = APIRouter(route_class=E2bRoute, include_in_schema=False)


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


def _timeout(value: Any, default: float | None = DEFAULT_TIMEOUT_S) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise E2bError(400, "timeout must be a non-negative number of seconds")
    if value == 0:
        return default
    return float(min(value, MAX_TIMEOUT_S))


def _str_map(value: Any, what: str) -> dict[str, str]:
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


def _row(st: E2bState, c: Context, tenant: Tenant, sandbox_id: str) -> tuple[Any, E2bRow]:
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
    if alias in c.runtime.templates.names():
        return alias, None, alias
    snap = c.store.snapshot(alias) or c.store.snapshot_by_name(tenant.id, alias)
    if snap is not None and snap.tenant_id == tenant.id:
        return snap.template, snap.id, alias
    raise E2bError(404, f"template '{name}' not found (cloche serves 'base', 'code-interpreter-v1', its own "
                        f"templates {c.runtime.templates.names()} and your snapshots)")  # fmt: skip


def _sweep(st: E2bState, c: Context) -> None:
    """Drop E2B rows of sandboxes that are gone (killed through cloche's API, expired)."""
    if time.monotonic() - st.last_sweep < 60:
        return
    st.last_sweep = time.monotonic()
    for sandbox_id in st.store.sandbox_ids():
        if c.store.sandbox(sandbox_id) is None:
            st.forget(sandbox_id)


async def create(request: Request) -> Response:
    st, c, tenant = authenticate(request)
    _sweep(st, c)
    body = await body_of(request)
    _check_unsupported(body)
    network = e2b_network.to_cloche(body.get("network"), body.get("allow_internet_access"))
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
            template=template, timeout_s=_timeout(body.get("timeout")), snapshot=snapshot, network=network,
            metadata=_str_map(body.get("metadata"), "metadata"), env=_str_map(body.get("envVars"), "envVars"),
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


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return max(0, int(data["o"]))
    except (ValueError, KeyError, TypeError):
        raise E2bError(400, "invalid nextToken") from None


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
        _, row = _row(st, c, tenant, view.row.id)
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
    start = _offset(q.get("nextToken"))
    page = items[start : start + limit]
    headers = {"x-next-token": _page_token(start + limit)} if start + limit < len(items) else {}
    return JSONResponse(page, headers=headers)


async def list_v1(request: Request) -> Response:
    st, c, tenant = authenticate(request)
    return JSONResponse(_matching(st, c, tenant, request, {"running"}))


router.add_api_route("/v2/sandboxes", list_v2, methods=["GET"])
router.add_api_route("/sandboxes", list_v1, methods=["GET"])


# ---- metrics (before /sandboxes/{id}) ---------------------------------------------------------


def _metric(c: Context, sandbox_id: str) -> dict[str, Any] | None:
    """A running sandbox's current sample as E2B's SandboxMetric (no history is kept):
    cpu from the scheduler's reading of the cgroup each second (0 before the first),
    memory as E2B counts it (`memUsed` without the page cache, which is `memCache`),
    disk from the sandbox's own filesystem image."""
    rec = c.runtime.get(sandbox_id)
    if rec.state != "running":
        return None
    try:
        usage = c.runtime.usage(sandbox_id)
    except (OSError, RuntimeFailure):
        return None
    scheduler = c.sandboxes.scheduler
    cores = scheduler.view.usage.get(sandbox_id, (0.0, 0.0))[0] if scheduler else 0.0
    anon = int(anon_memory_mb(f"{c.runtime.cgroup_parent}/{sandbox_id}") * 1024 * 1024)
    cpus = max(1, math.ceil(rec.spec.limits.cpu))
    disk_total = disk_used = 0
    try:
        vfs = os.statvfs(c.runtime.run / sandbox_id / "disk")
        disk_total = vfs.f_blocks * vfs.f_frsize
        disk_used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    except OSError:
        pass
    now = time.time()
    return {"timestamp": iso(now), "timestampUnix": int(now), "cpuCount": cpus,
            "cpuUsedPct": round(min(100.0, cores / cpus * 100), 2), "memUsed": anon,
            "memTotal": rec.spec.limits.memory_mb << 20, "memCache": max(0, usage.memory_bytes - anon),
            "diskUsed": disk_used, "diskTotal": disk_total}  # fmt: skip


def _unix_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise E2bError(400, f"{name} must be a Unix time in seconds") from None


async def metrics_many(request: Request) -> Response:
    _, c, tenant = authenticate(request)
    ids = [s for s in (request.query_params.get("sandbox_ids") or "").split(",") if s]
    if len(ids) > 100:
        raise E2bError(400, "at most 100 sandbox_ids")
    out = {}
    for sandbox_id in ids:
        try:
            c.sandboxes.get(tenant, sandbox_id)
        except ApiError:
            continue
        metric = _metric(c, sandbox_id)
        if metric is not None:
            out[sandbox_id] = metric
    return JSONResponse({"sandboxes": out})


async def metrics_one(sandbox_id: str, request: Request) -> Response:
    """The current sample, when it falls within `start`..`end` (Unix seconds) if given."""
    _, c, tenant = authenticate(request)
    start, end = _unix_param(request, "start"), _unix_param(request, "end")
    c.sandboxes.get(tenant, sandbox_id)
    metric = _metric(c, sandbox_id)
    if metric is None or (start is not None and metric["timestampUnix"] < start) \
            or (end is not None and metric["timestampUnix"] > end):  # fmt: skip
        return JSONResponse([])
    return JSONResponse([metric])


router.add_api_route("/sandboxes/metrics", metrics_many, methods=["GET"])
router.add_api_route("/sandboxes/{sandbox_id}/metrics", metrics_one, methods=["GET"])


# ---- one sandbox ------------------------------------------------------------------------------


async def get_sandbox(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    view, row = _row(st, c, tenant, sandbox_id)
    return JSONResponse(detail_json(view, row, sandbox_domain(c)))


async def kill(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    await c.sandboxes.kill(tenant, sandbox_id)
    st.forget(sandbox_id)
    return Response(status_code=204)


async def set_timeout(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    if "timeout" not in body:
        raise E2bError(400, "timeout is required")
    c.sandboxes.get(tenant, sandbox_id)
    await c.runtime.set_timeout(sandbox_id, _timeout(body["timeout"], default=1))
    return Response(status_code=204)


async def refresh(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    duration = _timeout(body.get("duration"), default=60) or 60
    current = view.record.expires_at
    if current is not None and current < time.time() + duration:
        await c.runtime.set_timeout(sandbox_id, duration)
    return Response(status_code=204)


async def pause(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    if view.record.state in ("hibernated", "stopped"):
        raise E2bError(409, f"sandbox {sandbox_id} is already paused")
    await c.runtime.hibernate(sandbox_id)
    await c.runtime.set_timeout(sandbox_id, None)  # like E2B, a paused sandbox does not time out
    return Response(status_code=204)


async def _wake(st: E2bState, c: Context, tenant: Tenant, sandbox_id: str, timeout: Any) -> E2bRow:
    _, row = _row(st, c, tenant, sandbox_id)
    await c.sandboxes.running(tenant, sandbox_id)
    await c.runtime.set_timeout(sandbox_id, _timeout(timeout))
    return row


async def connect_sandbox(sandbox_id: str, request: Request) -> Response:
    """200 with the running sandbox (its timeout only ever extended), 201 when it had
    to be woken first."""
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view, row = _row(st, c, tenant, sandbox_id)
    if view.record.state in ("running", "creating"):
        wanted = _timeout(body.get("timeout"), default=None)
        current = view.record.expires_at
        if wanted is not None and current is not None and current < time.time() + wanted:
            await c.runtime.set_timeout(sandbox_id, wanted)
        c.runtime.touch(sandbox_id)
        return JSONResponse(created_json(row, sandbox_domain(c)), 200)
    row = await _wake(st, c, tenant, sandbox_id, body.get("timeout"))
    return JSONResponse(created_json(row, sandbox_domain(c)), 201)


async def resume(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    if view.record.state in ("running", "creating"):
        raise E2bError(409, f"sandbox {sandbox_id} is already running")
    row = await _wake(st, c, tenant, sandbox_id, body.get("timeout"))
    return JSONResponse(created_json(row, sandbox_domain(c)), 201)


async def fork(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    _, source = _row(st, c, tenant, sandbox_id)
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
        raise E2bError(400, "count must be an integer between 1 and 20")
    timeout = _timeout(body.get("timeout"))
    results: list[dict[str, Any]] = []
    for _ in range(count):
        try:
            view = await c.sandboxes.fork(tenant, sandbox_id, None, None)
            await c.runtime.set_timeout(view.row.id, timeout)
            row = st.store.ensure(view.row.id, tenant.id, source.template, st.traffic.token(view.row.id),
                                  auto_resume=source.auto_resume)  # fmt: skip
            results.append({"sandbox": created_json(row, sandbox_domain(c))})
        except KNOWN as exc:
            p = problem(exc)
            results.append({"error": {"code": p.status, "message": p.message}})
    return JSONResponse(results, 201)


async def snapshot(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    name = body.get("name") or f"snapshot-{secrets.token_hex(4)}"
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", name):
        raise E2bError(400, "name must be letters, digits, '.', '_' or '-'")
    _row(st, c, tenant, sandbox_id)
    snap = await c.snapshots.create(tenant, sandbox_id, name)
    return JSONResponse({"snapshotID": snap.id, "names": [snap.name]}, 201)


async def list_snapshots(request: Request) -> Response:
    _, c, tenant = authenticate(request)
    q = request.query_params
    rows = [r for r in c.snapshots.list(tenant)
            if (not q.get("sandboxID") or r.sandbox_id == q["sandboxID"])
            and (not q.get("name") or q["name"] in (r.id, r.name))]  # fmt: skip
    try:
        limit = max(1, min(int(q.get("limit") or 100), 1000))
    except ValueError:
        raise E2bError(400, "limit must be an integer") from None
    start = _offset(q.get("nextToken"))
    page = [{"snapshotID": r.id, "names": [r.name]} for r in rows[start : start + limit]]
    headers = {"x-next-token": _page_token(start + limit)} if start + limit < len(rows) else {}
    return JSONResponse(page, headers=headers)


async def delete_template(template_id: str, request: Request) -> Response:
    _, c, tenant = authenticate(request)
    name = urllib.parse.unquote(template_id)
    snap = c.store.snapshot(name) or c.store.snapshot_by_name(tenant.id, name)
    if snap is None or snap.tenant_id != tenant.id:
        raise E2bError(404, f"template '{name}' not found (only snapshots can be deleted through this API)")
    c.snapshots.delete(tenant, snap.id)
    return Response(status_code=204)


async def logs(sandbox_id: str, request: Request) -> Response:
    _, c, tenant = authenticate(request)
    c.sandboxes.get(tenant, sandbox_id)
    if request.url.path.startswith("/v2/"):
        return JSONResponse({"logs": []})
    return JSONResponse({"logs": [], "logEntries": []})


async def network(sandbox_id: str, request: Request) -> Response:
    """E2B's update_network: the egress part of the policy (rules and egress proxy
    included) is replaced atomically; public traffic, the host mask and the HTTPS ports
    are not part of it and stay as they were."""
    _, c, tenant = authenticate(request)
    current = c.sandboxes.get(tenant, sandbox_id).record.spec.network
    body = await body_of(request)
    policy = e2b_network.to_cloche(body, body.get("allow_internet_access"), update=True)
    policy["public"], policy["mask_request_host"] = current.public, current.mask_request_host
    policy["https_ports"] = list(current.https_ports)
    await c.sandboxes.set_network(tenant, sandbox_id, policy)
    return Response(status_code=204)


router.add_api_route("/sandboxes/{sandbox_id}", get_sandbox, methods=["GET"])
router.add_api_route("/sandboxes/{sandbox_id}", kill, methods=["DELETE"], status_code=204)
router.add_api_route("/sandboxes/{sandbox_id}/timeout", set_timeout, methods=["POST"], status_code=204)
router.add_api_route("/sandboxes/{sandbox_id}/refreshes", refresh, methods=["POST"], status_code=204)
router.add_api_route("/sandboxes/{sandbox_id}/pause", pause, methods=["POST"], status_code=204)
router.add_api_route("/sandboxes/{sandbox_id}/resume", resume, methods=["POST"], status_code=201)
router.add_api_route("/sandboxes/{sandbox_id}/connect", connect_sandbox, methods=["POST"])
router.add_api_route("/v2/sandboxes/{sandbox_id}/connect", connect_sandbox, methods=["POST"])
router.add_api_route("/sandboxes/{sandbox_id}/fork", fork, methods=["POST"], status_code=201)
router.add_api_route("/sandboxes/{sandbox_id}/snapshots", snapshot, methods=["POST"], status_code=201)
router.add_api_route("/snapshots", list_snapshots, methods=["GET"])
router.add_api_route("/templates/{template_id}", delete_template, methods=["DELETE"], status_code=204)
router.add_api_route("/sandboxes/{sandbox_id}/logs", logs, methods=["GET"])
router.add_api_route("/v2/sandboxes/{sandbox_id}/logs", logs, methods=["GET"])
router.add_api_route("/sandboxes/{sandbox_id}/network", network, methods=["PUT"])


# ---- what cloche does not serve ---------------------------------------------------------------

_VOLUMES = "E2B volumes are not supported by cloche"
_TEMPLATES = "E2B's template build API is not supported by cloche (import templates with `cloche template import`)"
UNSUPPORTED = {
    "/volumes": _VOLUMES,
    "/volumecontent": _VOLUMES,
    "/secrets": "E2B's secrets API is not supported by cloche (cloche's own is /v1/secrets)",
    "/templates": _TEMPLATES,
    "/v2/templates": _TEMPLATES,
    "/v3/templates": _TEMPLATES,
}


def _unsupported(message: str) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def unsupported(request: Request) -> Response:
        """A 400 in E2B's shape, which both SDKs raise with its message (a 404 would
        read as "not found" in some of their calls)."""
        authenticate(request)
        raise E2bError(400, message)

    return unsupported


_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]
for _prefix, _message in UNSUPPORTED.items():  # after the routes above (DELETE /templates/{id})
    router.add_api_route(_prefix, _unsupported(_message), methods=_ANY)
    router.add_api_route(f"{_prefix}/{{rest:path}}", _unsupported(_message), methods=_ANY)
