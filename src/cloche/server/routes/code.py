"""Cloche's own code interpreter: `POST /v1/sandboxes/{id}/code` runs Python in a
stateful kernel of the sandbox, so variables, imports and definitions persist between
calls (the MCP server's run-code tool stands on it).

The kernel is the E2B code interpreter's (`cloche.e2b.interpreter`: `Kernel`, `cell`,
kernel.py inside the sandbox), with a registry of its own whose kernels run as the
sandbox's root in /workspace, like exec. A kernel dies with its sandbox (pause,
hibernate, stop): the next call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cloche.constants import DAY_S
from cloche.e2b.interpreter import KernelRegistry, cell
from cloche.e2b.users import ROOT
from cloche.node.records import SandboxRecord
from cloche.server.auth import CurrentTenant
from cloche.server.context import Context, ctx
from cloche.server.models import Strict

router = APIRouter(prefix="/v1/sandboxes", tags=["code"])


class CodeBody(Strict):
    code: str = Field(..., max_length=8 << 20, description="Python source; the last expression's value is returned")
    env: dict[str, str] = Field(default_factory=dict, max_length=256, description="environment during this cell")
    timeout_s: float | None = Field(None, gt=0, le=DAY_S, description="interrupt the cell after this long")


class CodeError(BaseModel):
    name: str = Field(..., description="the exception's class, e.g. ZeroDivisionError")
    value: str = Field(..., description="str() of the exception")
    traceback: str


class CodeOut(BaseModel):
    stdout: str
    stderr: str
    results: list[dict[str, Any]] = Field(..., description="the last expression's value and display() calls: `text` "
                                          "(repr), html, png (base64)... as the object has them; `is_main_result` "
                                          "marks the former")  # fmt: skip
    error: CodeError | None = Field(..., description="the uncaught exception, if the cell raised one")
    execution_count: int | None = Field(..., description="cells this kernel has run (1 on a fresh kernel)")


class Kernels(KernelRegistry):
    """The registry of cloche's own kernels; a sandbox's are forgotten when it stops."""

    def __init__(self, c: Context) -> None:
        super().__init__(ROOT, "/workspace")
        self.c = c
        c.sandboxes.subscribe(self)

    async def sandbox_started(self, record: SandboxRecord) -> None:
        pass

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        self.forget(sandbox_id)


def _kernels(request: Request) -> Kernels:
    kernels = getattr(request.app.state, "kernels", None)
    if kernels is None or kernels.c is not ctx(request):  # one per server lifespan
        kernels = request.app.state.kernels = Kernels(ctx(request))
    return kernels


@router.post("/{sandbox_id}/code", response_model=CodeOut)
async def run_code(sandbox_id: str, body: CodeBody, request: Request, tenant: CurrentTenant) -> CodeOut:
    """Run Python in the sandbox's kernel (started by the first call, as root in
    /workspace) and return its output. An exception in the code is `error`, not an HTTP
    error. One cell runs at a time per sandbox; others wait their turn."""
    c = ctx(request)
    await c.sandboxes.woken(tenant, sandbox_id)
    kernel = _kernels(request).default(sandbox_id)
    out = CodeOut(stdout="", stderr="", results=[], error=None, execution_count=None)
    try:
        async with asyncio.timeout(body.timeout_s):
            await kernel.lock.acquire()
            async with contextlib.aclosing(cell(kernel, c.inside, body.code, body.env)) as events:
                async for event in events:
                    kind = event.get("type")
                    if kind in ("stdout", "stderr"):
                        setattr(out, kind, getattr(out, kind) + event.get("text", ""))
                    elif kind == "result":
                        out.results.append({k: v for k, v in event.items() if k != "type"})
                    elif kind == "error":
                        out.error = CodeError.model_validate(event)
                    elif kind == "number_of_executions":
                        out.execution_count = event.get("execution_count")
    except TimeoutError:
        out.error = CodeError(name="TimeoutError", value=f"the cell ran longer than {body.timeout_s} s",
                              traceback="interrupted (KeyboardInterrupt) after timeout_s")  # fmt: skip
    return out
