"""Apps and their one-to-one agents: deploy, list, delete, and invoke by key."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from cloche.control.errors import ApiError
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.server.models_apps import AgentList, AgentMove, AgentMoved, AgentOut, AppDeploy, AppList, AppOut
from cloche.store.db import AppRow

router = APIRouter(prefix="/v1/apps", tags=["agents"])
AppName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="app name")]
INVOKE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _out(row: AppRow) -> AppOut:
    return AppOut(name=row.name, version=row.version, created_at=row.created_at, updated_at=row.updated_at,
                  spec=AppDeploy(**row.spec))  # fmt: skip


@router.put("/{app}", response_model=AppOut)
async def deploy(app: AppName, body: AppDeploy, request: Request, tenant: CurrentTenant) -> AppOut:
    """Deploy or redeploy an app. A redeploy applies to new and woken instances; running
    instances switch to it at their next invoke, between requests."""
    c = ctx(request)
    if body.template and body.template not in c.templates.names():
        raise ApiError(400, "template_not_found", f"template {body.template!r} does not exist")
    return _out(c.agents.deploy(tenant, app, body.model_dump(exclude_none=True)))


@router.get("", response_model=AppList)
async def list_apps(request: Request, tenant: CurrentTenant) -> AppList:
    return AppList(items=[_out(r) for r in ctx(request).store.apps(tenant.id)])


@router.get("/{app}", response_model=AppOut)
async def get_app(app: AppName, request: Request, tenant: CurrentTenant) -> AppOut:
    return _out(ctx(request).agents.app(tenant, app))


@router.delete("/{app}", status_code=204, response_class=Response)
async def delete_app(app: AppName, request: Request, tenant: CurrentTenant,
                     state: Annotated[bool, Query(description="also delete each agent's state")] = False,
                     ) -> Response:  # fmt: skip
    await ctx(request).agents.delete_app(tenant, app, state)
    return Response(status_code=204)


@router.get("/{app}/agents", response_model=AgentList)
async def list_agents(app: AppName, request: Request, tenant: CurrentTenant) -> AgentList:
    return AgentList(items=[AgentOut(**a) for a in ctx(request).agents.agents(tenant, app)])


@router.get("/{app}/agents/{key}", response_model=AgentOut)
async def get_agent(app: AppName, key: str, request: Request, tenant: CurrentTenant) -> AgentOut:
    return AgentOut(**ctx(request).agents.agent(tenant, app, key))


@router.delete("/{app}/agents/{key}", status_code=204, response_class=Response)
async def delete_agent(app: AppName, key: str, request: Request, tenant: CurrentTenant,
                       state: Annotated[bool, Query(description="also delete the agent's state")] = False,
                       ) -> Response:  # fmt: skip
    ctx(request).agents.app(tenant, app)
    await ctx(request).agents.delete_agent(tenant, app, key, state)
    return Response(status_code=204)


@router.post("/{app}/agents/{key}/move", response_model=AgentMoved)
async def move_agent(app: AppName, key: str, body: AgentMove, request: Request, response: Response,
                     tenant: CurrentTenant) -> AgentMoved:  # fmt: skip
    """Move the agent to another region of the cluster: it is hibernated where it is, the
    chunks of its files the region's store lacks are copied there, and it resumes on a
    node of that region. Its invocations meanwhile wait, and are then served there."""
    c = ctx(request)
    if c.geo is None:
        raise ApiError(400, "invalid_request", "moving an agent between regions needs cluster mode")
    live = c.geo.mover.live_regions()
    if body.region not in live:
        raise ApiError(400, "unknown_region", f"no live node is in region {body.region!r} "
                       f"(live: {', '.join(sorted(live))})")  # fmt: skip
    pinned = c.agents.app(tenant, app).spec.get("regions")
    if pinned and body.region not in pinned:
        raise ApiError(409, "region_not_allowed", f"app {app!r} is pinned to {', '.join(pinned)}")
    report = await c.agents.relocate(tenant, app, key, lambda sandbox_id: c.geo.mover.move(sandbox_id, body.region))
    response.headers["cloche-region"] = report.region
    return AgentMoved(**vars(report))


@router.api_route("/{app}/agents/{key}/invoke", methods=INVOKE_METHODS, response_class=StreamingResponse)
@router.api_route("/{app}/agents/{key}/invoke/{path:path}", methods=INVOKE_METHODS,
                  response_class=StreamingResponse, include_in_schema=False)  # fmt: skip
async def invoke(app: AppName, key: str, request: Request, tenant: CurrentTenant, path: str = "") -> StreamingResponse:
    """Send any request to the key's own agent (created, woken or restarted as needed);
    its status, headers and body come back as they are, streamed."""
    if not re.fullmatch(r"[\x20-\x7e]*", path):
        raise ApiError(400, "invalid_request", "invoke path must be printable ASCII")
    query = request.url.query
    target = path + (f"?{query}" if query else "")
    result = await ctx(request).agents.invoke(tenant, app, key, request.method, target, dict(request.headers),
                                              request.stream())  # fmt: skip
    return StreamingResponse(result.body, status_code=result.status, headers=result.headers)
