"""E2B's routes on one sandbox (get, kill, timeouts, pause, resume and connect, fork,
snapshots, logs, network) and the 400s for the parts of E2B's API cloche does not serve."""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloche.control.errors import KNOWN, problem
from cloche.e2b import network as e2b_network
from cloche.e2b.api import (
    E2bRoute,
    authenticate,
    body_of,
    created_json,
    detail_json,
    offset_of,
    page_token,
    row_of,  # fmt: skip
    sandbox_domain,
    timeout_of,
)
from cloche.e2b.errors import E2bError
from cloche.e2b.state import E2bState
from cloche.e2b.store import E2bRow
from cloche.server.context import Context
from cloche.store.db import Tenant

router = APIRouter(route_class=E2bRoute, include_in_schema=False)


# ---- one sandbox ------------------------------------------------------------------------------


async def get_sandbox(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    view, row = row_of(st, c, tenant, sandbox_id)
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
    await c.sandboxes.set_timeout(tenant, sandbox_id, timeout_of(body["timeout"], default=1))
    return Response(status_code=204)


async def refresh(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    duration = timeout_of(body.get("duration"), default=60) or 60
    current = view.record.expires_at
    if current is not None and current < time.time() + duration:
        await c.sandboxes.set_timeout(tenant, sandbox_id, duration)
    return Response(status_code=204)


async def pause(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    if view.record.state in ("hibernated", "stopped"):
        raise E2bError(409, f"sandbox {sandbox_id} is already paused")
    await c.sandboxes.hibernate(tenant, sandbox_id)
    await c.sandboxes.set_timeout(tenant, sandbox_id, None)  # like E2B, a paused sandbox does not time out
    return Response(status_code=204)


async def _wake(st: E2bState, c: Context, tenant: Tenant, sandbox_id: str, timeout: Any) -> E2bRow:
    _, row = row_of(st, c, tenant, sandbox_id)
    await c.sandboxes.woken(tenant, sandbox_id)
    await c.sandboxes.set_timeout(tenant, sandbox_id, timeout_of(timeout))
    return row


async def _state(c: Context, sandbox_id: str, seen: str) -> str:
    """The sandbox's state, from its node when this replica saw it running: in a cluster,
    another replica may have paused it a moment ago (the SDK connects or resumes right
    after), and this replica's view trails that change by the node's event stream."""
    return (await c.sandboxes.node.current(sandbox_id)).state if seen in ("running", "creating") else seen


async def connect_sandbox(sandbox_id: str, request: Request) -> Response:
    """200 with the running sandbox (its timeout only ever extended), 201 when it had
    to be woken first."""
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view, row = row_of(st, c, tenant, sandbox_id)
    if await _state(c, sandbox_id, view.record.state) in ("running", "creating"):
        wanted = timeout_of(body.get("timeout"), default=None)
        current = view.record.expires_at
        if wanted is not None and current is not None and current < time.time() + wanted:
            await c.sandboxes.set_timeout(tenant, sandbox_id, wanted)
        c.sandboxes.touch(tenant, sandbox_id)
        return JSONResponse(created_json(row, sandbox_domain(c)), 200)
    row = await _wake(st, c, tenant, sandbox_id, body.get("timeout"))
    return JSONResponse(created_json(row, sandbox_domain(c)), 201)


async def resume(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    if await _state(c, sandbox_id, view.record.state) in ("running", "creating"):
        raise E2bError(409, f"sandbox {sandbox_id} is already running")
    row = await _wake(st, c, tenant, sandbox_id, body.get("timeout"))
    return JSONResponse(created_json(row, sandbox_domain(c)), 201)


async def fork(sandbox_id: str, request: Request) -> Response:
    st, c, tenant = authenticate(request)
    body = await body_of(request)
    _, source = row_of(st, c, tenant, sandbox_id)
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
        raise E2bError(400, "count must be an integer between 1 and 20")
    timeout = timeout_of(body.get("timeout"))
    results: list[dict[str, Any]] = []
    for _ in range(count):
        try:
            view = await c.sandboxes.fork(tenant, sandbox_id, None, None)
            await c.sandboxes.set_timeout(tenant, view.row.id, timeout)
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
    row_of(st, c, tenant, sandbox_id)
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
    start = offset_of(q.get("nextToken"))
    page = [{"snapshotID": r.id, "names": [r.name]} for r in rows[start : start + limit]]
    headers = {"x-next-token": page_token(start + limit)} if start + limit < len(rows) else {}
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
