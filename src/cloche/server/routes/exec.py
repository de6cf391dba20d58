"""Running commands: buffered, streamed as server-sent events, and interactive PTYs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from cloche.control.errors import ApiError
from cloche.node.errors import RuntimeFailure
from cloche.node.protocol import ExecRequest
from cloche.server.auth import CurrentTenant, authenticate_now
from cloche.server.context import ctx
from cloche.server.models import ExecBody, ExecOut
from cloche.store.db import Tenant

router = APIRouter(prefix="/v1/sandboxes", tags=["exec"])
STREAM_OUTPUT_CAP = 1 << 40


def _request(body: ExecBody, output_cap: int | None = None) -> ExecRequest:
    argv = ["/bin/sh", "-c", body.cmd] if isinstance(body.cmd, str) else body.cmd
    if not argv or not argv[0]:
        raise ApiError(422, "validation_error", "cmd: must not be empty")
    if any("\0" in a for a in argv) or any("\0" in k or "=" in k or not k for k in body.env):
        raise ApiError(422, "validation_error", "cmd/env: NUL bytes, '=' or empty names in env keys")
    req = ExecRequest(cmd=argv, env=dict(body.env), cwd=body.cwd, timeout_s=body.timeout_s,
                      stdin=body.stdin.encode() if body.stdin is not None else None)  # fmt: skip
    if output_cap:
        req.output_cap = output_cap
    return req


@router.post("/{sandbox_id}/exec", response_model=ExecOut)
async def exec_command(sandbox_id: str, body: ExecBody, request: Request,
                       tenant: CurrentTenant) -> ExecOut:  # fmt: skip
    c = ctx(request)
    result = await c.inside.run(tenant, sandbox_id, _request(body))
    c.metrics.exec_seconds.observe(result.duration_ms / 1000)
    return ExecOut(
        exit_code=result.exit_code,
        signal=result.signal,
        stdout=result.stdout.decode(errors="replace"),
        stderr=result.stderr.decode(errors="replace"),
        duration_ms=round(result.duration_ms, 3),
        truncated=result.truncated,
        timed_out=result.timed_out,
    )


def _sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/{sandbox_id}/exec/stream", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
async def exec_stream(sandbox_id: str, body: ExecBody, request: Request,
                      tenant: CurrentTenant) -> StreamingResponse:  # fmt: skip
    """Stream a long command as server-sent events: start, stdout, stderr, exit."""
    session = await ctx(request).inside.start(tenant, sandbox_id, _request(body, STREAM_OUTPUT_CAP))

    async def events() -> AsyncIterator[bytes]:
        try:
            async for ev in session.events():
                if ev.kind == "start":
                    yield _sse("start", {"pid": ev.pid})
                elif ev.kind in ("stdout", "stderr"):
                    yield _sse(ev.kind, {"data": ev.data.decode(errors="replace")})
                else:
                    yield _sse("exit", {"exit_code": ev.exit_code, "signal": ev.signal,
                                        "truncated": ev.truncated, "timed_out": ev.timed_out})  # fmt: skip
        except RuntimeFailure as exc:
            yield _sse("error", {"code": "runtime_error", "message": str(exc)})
        finally:
            await session.close()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.websocket("/{sandbox_id}/pty")
async def pty(websocket: WebSocket, sandbox_id: str) -> None:
    """Interactive terminal: binary frames are keystrokes and output; a text frame
    {"type": "resize", "rows", "cols"} resizes; the last frame is {"type": "exit"}."""
    try:
        tenant = authenticate_now(websocket)  # type: ignore[arg-type]
    except ApiError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return
    await serve_pty(websocket, tenant, sandbox_id)


async def serve_pty(websocket: WebSocket, tenant: Tenant, sandbox_id: str) -> None:
    """The PTY session itself, for a caller already authenticated (the API by bearer key,
    the dashboard by its session cookie)."""
    c = ctx(websocket)  # type: ignore[arg-type]
    try:
        await c.sandboxes.woken(tenant, sandbox_id)
    except ApiError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return
    q = websocket.query_params
    cmd = shlex.split(q.get("cmd", "/bin/sh -l")) or ["/bin/sh"]
    rows, cols = int(q.get("rows", "24") or 24), int(q.get("cols", "80") or 80)
    request = ExecRequest(cmd=cmd, pty=True, rows=rows, cols=cols, interactive=True,
                          output_cap=STREAM_OUTPUT_CAP, cwd=q.get("cwd", "/workspace"))  # fmt: skip
    session = await c.inside.open_exec(sandbox_id, request)
    await websocket.accept()

    async def pump_input() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect()
            if msg.get("bytes"):
                await session.write_stdin(msg["bytes"])
            elif msg.get("text"):
                ctl = json.loads(msg["text"])
                if ctl.get("type") == "resize":
                    await session.resize(int(ctl["rows"]), int(ctl["cols"]))

    async def pump_output() -> None:
        async for ev in session.events():
            if ev.kind == "stdout":
                await websocket.send_bytes(ev.data)
            elif ev.kind == "exit":
                await websocket.send_text(json.dumps({"type": "exit", "exit_code": ev.exit_code}))

    # Whichever ends first ends the session: the command's exit, or the client leaving
    # (an idle shell would otherwise wait for input forever, holding its process).
    pumps = [asyncio.create_task(pump_input()), asyncio.create_task(pump_output())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await session.close()
        with contextlib.suppress(Exception):
            await websocket.close()
