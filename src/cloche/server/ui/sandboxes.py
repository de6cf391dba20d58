"""Sandboxes: the live list, one sandbox's page, its actions, processes and commands.

Every operation goes through the same services as the API (`SandboxService`,
`NodeRuntime` after the service's ownership check), asked as `Viewer.owner`: a tenant's
own sandboxes only (another tenant's answers 404), any sandbox for an admin. Views never
wake a sleeping sandbox; only the actions and the panels of a running one touch it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Request, Response

from cloche.control.sandboxes import SandboxView
from cloche.node.protocol import ExecRequest
from cloche.server.ui.figures import figures
from cloche.server.ui.render import go, live_page, page, ui_router
from cloche.server.ui.session import Action, Page, Viewer

router = ui_router()
PS = ["ps", "-eo", "pid,ppid,user,etime,rss,stat,args", "--sort", "pid"]
EXEC_CAP = 256 * 1024


def _rows(v: Viewer) -> list[dict[str, object]]:
    c = v.c
    cpu = c.sandboxes.scheduler.view.usage if c.sandboxes.scheduler is not None else None
    counters = c.nodes.network_counters()
    rows = []
    for tenant in v.tenants():
        for view in c.sandboxes.list(tenant):
            rows.append({"s": view.to_json(), "tenant": tenant.name,
                         "f": figures(c.nodes, view.record, counters, cpu)})  # fmt: skip
    rows.sort(key=lambda r: -r["s"]["created_at"])  # type: ignore[index, operator]
    return rows


@router.get("/sandboxes")
async def sandboxes(request: Request, v: Page) -> Response:
    return live_page(request, "sandboxes.html", v, rows=_rows(v))


def _view(v: Viewer, sandbox_id: str) -> SandboxView:
    return v.c.sandboxes.get(v.owner(sandbox_id), sandbox_id)


@router.get("/sandboxes/{sandbox_id}")
async def sandbox(request: Request, sandbox_id: str, v: Page) -> Response:
    service = v.c.sandboxes
    owner = v.owner(sandbox_id)
    view = service.get(owner, sandbox_id)
    placement = service.scheduler.explain(sandbox_id) if service.scheduler is not None else None
    return page(request, "sandbox.html", v, s=view.to_json(), owner=owner, network=service.network_status(view),
                placement=placement, agent_log=v.c.agents.log_tail(sandbox_id))  # fmt: skip


Lifecycle = Literal["pause", "hibernate", "wake", "fork", "kill"]


@router.post("/sandboxes/{sandbox_id}/actions/{action}")
async def act(request: Request, sandbox_id: str, action: Lifecycle, v: Action) -> Response:
    """The lifecycle buttons. Same calls as the API's pause, hibernate, resume, fork and
    DELETE routes; then the sandbox's page again (or the fork's, or the list)."""
    c, owner = v.c, v.owner(sandbox_id)
    if action == "wake":
        await c.sandboxes.woken(owner, sandbox_id)
    elif action == "fork":
        view = await c.sandboxes.fork(owner, sandbox_id, None, {})
        return go(request, f"/ui/sandboxes/{view.row.id}")
    elif action == "kill":
        await c.sandboxes.kill(owner, sandbox_id)
        return go(request, "/ui/sandboxes")
    else:
        await (c.sandboxes.pause(owner, sandbox_id) if action == "pause" else c.sandboxes.hibernate(owner, sandbox_id))
    return go(request, f"/ui/sandboxes/{sandbox_id}")


async def _exec(v: Viewer, sandbox_id: str, argv: list[str], timeout_s: float = 30) -> dict[str, object]:
    request = ExecRequest(cmd=argv, timeout_s=timeout_s, output_cap=EXEC_CAP)
    result = await v.c.inside.run(v.owner(sandbox_id), sandbox_id, request)
    return {"argv": argv, "exit_code": result.exit_code, "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"), "timed_out": result.timed_out,
            "truncated": result.truncated, "ms": round(result.duration_ms)}  # fmt: skip


@router.get("/sandboxes/{sandbox_id}/processes")
async def processes(request: Request, sandbox_id: str, v: Page) -> Response:
    """`ps` inside the sandbox (the processes panel; loaded only for a running sandbox)."""
    out = await _exec(v, sandbox_id, PS, timeout_s=10)
    lines = str(out["stdout"]).splitlines()
    header = lines[0].split() if lines else []
    procs = [line.split(None, len(header) - 1) for line in lines[1:]] if header else []
    return page(request, "_processes.html", v, header=header, procs=procs, out=out)


@router.post("/sandboxes/{sandbox_id}/exec")
async def run(request: Request, sandbox_id: str, v: Action, cmd: Annotated[str, Form(min_length=1, max_length=8192)],
              timeout_s: Annotated[float, Form(gt=0, le=600)] = 30) -> Response:  # fmt: skip
    """Run one command (`/bin/sh -c`) and show its output."""
    out = await _exec(v, sandbox_id, ["/bin/sh", "-c", cmd], timeout_s)
    return page(request, "_exec.html", v, out=out, cmd=cmd)
