"""Apps and their agents, and a state namespace's KV browser and log tail.

Read-only views over `AgentService` and the state engine, scoped like the API: a tenant
sees its own apps and namespaces; an admin sees every tenant's (`?tenant=` names whose).
An agent's namespace is its sandbox's id, the one the sandbox reaches from inside.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from cloche.control.errors import ApiError
from cloche.server.ui.render import page, ui_router
from cloche.server.ui.session import Page
from cloche.state.engine import StateEngine, StateError

router = ui_router()
TenantQuery = Annotated[str | None, Query(max_length=64)]
LOG_TAIL = 50
VALUE_PREVIEW = 64 * 1024


def _engine(request: Request) -> StateEngine:
    return request.app.state.state.engine


def _state_error(e: StateError) -> ApiError:
    return ApiError(e.status, e.code, e.message)


@router.get("/apps")
async def apps(request: Request, v: Page) -> Response:
    rows = [(t, app) for t in v.tenants() for app in v.c.store.apps(t.id)]
    return page(request, "apps.html", v, rows=rows)


@router.get("/apps/{app}")
async def app(request: Request, app: str, v: Page, tenant: TenantQuery = None) -> Response:
    """One app: its spec and its agents (key, sandbox, state, node, version)."""
    owner = v.scope(tenant)
    row = v.c.agents.app(owner, app)
    return page(request, "app.html", v, owner=owner, app=row, agents=v.c.agents.agents(owner, app))


@router.get("/state/{ns}")
async def state(request: Request, ns: str, v: Page, tenant: TenantQuery = None,
                prefix: Annotated[str, Query(max_length=1024)] = "",
                cursor: Annotated[str | None, Query(max_length=1024)] = None) -> Response:  # fmt: skip
    """A namespace: its keys (a page of 100 at a time) and the last entries of its log."""
    owner = v.scope(tenant)
    engine = _engine(request)
    try:
        keys = await engine.kv_list(owner.id, ns, prefix=prefix, cursor=cursor, limit=100)
        last = (await engine.log_read(owner.id, ns, 0, 1)).last_seq
        log = await engine.log_read(owner.id, ns, max(0, last - LOG_TAIL), LOG_TAIL)
    except StateError as e:
        raise _state_error(e) from None
    entries = [(e.seq, e.data.decode(errors="replace")) for e in log.items]
    return page(request, "state.html", v, owner=owner, ns=ns, keys=keys, prefix=prefix, log=entries)


@router.get("/state/{ns}/value")
async def value(request: Request, ns: str, v: Page, key: Annotated[str, Query(min_length=1, max_length=1024)],
                tenant: TenantQuery = None) -> Response:  # fmt: skip
    """One key's value, as text (the first 64 KiB)."""
    owner = v.scope(tenant)
    try:
        item = await _engine(request).kv_get(owner.id, ns, key)
    except StateError as e:
        raise _state_error(e) from None
    if item is None:
        raise ApiError(404, "not_found", f"key {key!r} not found in namespace {ns!r}")
    text = item.value[:VALUE_PREVIEW].decode(errors="replace")
    return page(request, "_value.html", v, item=item, text=text, cut=len(item.value) > VALUE_PREVIEW)
