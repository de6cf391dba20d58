"""Sandbox lifecycle routes."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloche.control.create import CreateRequest
from cloche.control.errors import ApiError, scheduler_errors
from cloche.server import links
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.server.models import (
    ForkBody,
    Network,
    NetworkOut,
    Omittable,
    SandboxCreate,
    SandboxList,
    SandboxOut,
    SandboxResize,
    TimeoutUpdate,
)

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])


EXISTING = {"model": SandboxOut, "links": links.SANDBOX, "description": "existing sandbox with this name"}


@router.post("", status_code=201, response_model=SandboxOut, responses={201: {"links": links.SANDBOX}, 200: EXISTING})
async def create_sandbox(body: Omittable[SandboxCreate], request: Request, tenant: CurrentTenant) -> Response:
    c = ctx(request)
    started = time.perf_counter()
    pool_claims = c.nodes.pool().claims
    view, created = await c.sandboxes.create(tenant, CreateRequest(**body.model_dump()))
    if created:
        source = "pool" if c.nodes.pool().claims > pool_claims else "cold"
        c.metrics.create_seconds.labels(source).observe(time.perf_counter() - started)
    out = view.to_json()
    if c.sandboxes.scheduler is not None:
        out["placement"] = c.sandboxes.scheduler.explain(view.row.id)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get("", response_model=SandboxList)
async def list_sandboxes(request: Request, tenant: CurrentTenant, state: str | None = None) -> SandboxList:
    metadata = {k[len("metadata."):]: v for k, v in request.query_params.items()
                if k.startswith("metadata.")}  # fmt: skip
    views = ctx(request).sandboxes.list(tenant, state=state, metadata=metadata)
    return SandboxList(items=[SandboxOut(**v.to_json()) for v in views])


@router.get("/{sandbox_id}", response_model=SandboxOut)
async def get_sandbox(sandbox_id: str, request: Request, tenant: CurrentTenant) -> SandboxOut:
    """The sandbox, with `placement` (which node the scheduler chose and why) and
    `network` (its policy, address, and traffic and DNS counters)."""
    service = ctx(request).sandboxes
    view = service.get(tenant, sandbox_id)
    out = view.to_json()
    out["network"] = service.network_status(view)
    if service.scheduler is not None:
        out["placement"] = service.scheduler.explain(sandbox_id)
    return SandboxOut(**out)


@router.patch("/{sandbox_id}", response_model=SandboxOut)
async def resize(sandbox_id: str, body: Omittable[SandboxResize], request: Request,
                 tenant: CurrentTenant) -> SandboxOut:  # fmt: skip
    """Change cpu, memory and pids limits of a running sandbox in place, without a
    restart. 409 when the node has no room (or the sandbox uses more memory than the
    new limit); a stopped or hibernated sandbox gets them when it starts."""
    service = ctx(request).sandboxes
    service.get(tenant, sandbox_id)
    if service.scheduler is None:
        raise ApiError(501, "not_implemented", "this server has no scheduler")
    with scheduler_errors():
        await service.scheduler.resize(tenant, sandbox_id, body.cpu, body.memory_mb, body.pids, body.allow_move)
    out = service.get(tenant, sandbox_id).to_json()
    out["placement"] = service.scheduler.explain(sandbox_id)
    return SandboxOut(**out)


@router.get("/{sandbox_id}/network", response_model=NetworkOut)
async def get_network(sandbox_id: str, request: Request, tenant: CurrentTenant) -> NetworkOut:
    service = ctx(request).sandboxes
    return NetworkOut(**service.network_status(service.get(tenant, sandbox_id)))


@router.put("/{sandbox_id}/network", response_model=NetworkOut)
async def set_network(sandbox_id: str, body: Network, request: Request, tenant: CurrentTenant) -> NetworkOut:
    """Replace the sandbox's network policy atomically ("none", "internet" or a policy
    object). It is in force at once; open connections it denies are cut. A sleeping
    sandbox gets it when it wakes, and it survives pause, hibernate and fork."""
    service = ctx(request).sandboxes
    network = body if isinstance(body, str) else body.model_dump()
    view = await service.set_network(tenant, sandbox_id, network)
    return NetworkOut(**service.network_status(view))


@router.delete("/{sandbox_id}", status_code=204, response_class=Response)
async def kill_sandbox(sandbox_id: str, request: Request, tenant: CurrentTenant) -> Response:
    await ctx(request).sandboxes.kill(tenant, sandbox_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/timeout", response_model=SandboxOut)
async def set_timeout(sandbox_id: str, body: Omittable[TimeoutUpdate], request: Request,
                      tenant: CurrentTenant) -> SandboxOut:  # fmt: skip
    view = await ctx(request).sandboxes.set_timeout(tenant, sandbox_id, body.timeout_s)
    return SandboxOut(**view.to_json())


@router.post("/{sandbox_id}/pause", response_model=SandboxOut)
async def pause(sandbox_id: str, request: Request, tenant: CurrentTenant) -> SandboxOut:
    view = await ctx(request).sandboxes.pause(tenant, sandbox_id)
    return SandboxOut(**view.to_json())


@router.post("/{sandbox_id}/resume", response_model=SandboxOut)
async def resume(sandbox_id: str, request: Request, tenant: CurrentTenant) -> SandboxOut:
    view = await ctx(request).sandboxes.running(tenant, sandbox_id)
    return SandboxOut(**view.to_json())


@router.post("/{sandbox_id}/hibernate", response_model=SandboxOut)
async def hibernate(sandbox_id: str, request: Request, tenant: CurrentTenant,
                    keep_local: bool = True) -> SandboxOut:  # fmt: skip
    """Snapshot the sandbox's files and release its CPU, memory and processes. Any later
    call that needs it running (exec, files, resume) wakes it with every file intact."""
    view = await ctx(request).sandboxes.hibernate(tenant, sandbox_id, keep_local=keep_local)
    return SandboxOut(**view.to_json())


@router.post("/{sandbox_id}/fork", status_code=201, response_model=SandboxOut,
             responses={201: {"links": links.SANDBOX}})  # fmt: skip
async def fork(sandbox_id: str, body: Omittable[ForkBody], request: Request, tenant: CurrentTenant) -> SandboxOut:
    """A new sandbox with the current files of this one (running or hibernated)."""
    view = await ctx(request).sandboxes.fork(tenant, sandbox_id, body.name, body.metadata)
    return SandboxOut(**view.to_json())
