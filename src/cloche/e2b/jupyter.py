"""e2b-code-interpreter's API (its port 49999): `POST /execute` streams a cell's
output as JSON lines, `/contexts` creates, lists, restarts and removes contexts (each
one kernel of `interpreter.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cloche.e2b.api import body_of
from cloche.e2b.errors import E2bError
from cloche.e2b.interpreter import KernelRegistry, cell
from cloche.e2b.state import JUPYTER_PORT, Target, target
from cloche.e2b.users import USER

router = APIRouter(include_in_schema=False)
LANGUAGES = {None: "python", "": "python", "python": "python", "python3": "python"}
MAX_CONTEXTS = 32  # per sandbox


async def _target(request: Request) -> Target:
    return await target(request, port=JUPYTER_PORT)


def _error(exc: E2bError) -> Response:
    return Response(exc.message, exc.status, media_type="text/plain")


def _language(value: Any) -> str:
    if value not in LANGUAGES:
        raise E2bError(400, f"language {value!r} is not supported by cloche's code interpreter (only python)")
    return LANGUAGES[value]


@router.post("/execute")
async def execute(request: Request) -> Response:
    try:
        t = await _target(request)
        body = await body_of(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise E2bError(400, "code is required")
        env = {str(k): str(v) for k, v in (body.get("env_vars") or {}).items()}
        registry: KernelRegistry = t.st.kernels
        if body.get("context_id"):
            if body.get("language"):
                raise E2bError(400, "give context_id or language, not both")
            kernel = registry.get(t.sandbox_id, str(body["context_id"]))
            if kernel is None:
                raise E2bError(404, f"context {body['context_id']} not found")
        else:
            _language(body.get("language"))
            kernel = registry.default(t.sandbox_id)
        await kernel.lock.acquire()
    except E2bError as exc:
        return _error(exc)

    async def lines() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(cell(kernel, t.c.inside, code, env)) as events:
            async for event in events:
                yield json.dumps(event).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})


@router.post("/contexts")
async def create_context(request: Request) -> Response:
    try:
        t = await _target(request)
        body = await body_of(request)
        _language(body.get("language"))
        cwd = body.get("cwd") or USER.home
        if not isinstance(cwd, str):
            raise E2bError(400, "cwd must be a string")
        if len(t.st.kernels.of(t.sandbox_id)) >= MAX_CONTEXTS:
            raise E2bError(429, f"at most {MAX_CONTEXTS} contexts per sandbox; remove one first")
        kernel = t.st.kernels.add(t.sandbox_id, cwd)
        try:
            async with kernel.lock:
                await kernel.start(t.c.inside)
        except BaseException:
            await t.st.kernels.remove(t.sandbox_id, kernel.id)
            raise
    except E2bError as exc:
        return _error(exc)
    return JSONResponse(kernel.info())


@router.get("/contexts")
async def list_contexts(request: Request) -> Response:
    try:
        t = await _target(request)
    except E2bError as exc:
        return _error(exc)
    return JSONResponse([k.info() for k in t.st.kernels.of(t.sandbox_id).values()])


@router.delete("/contexts/{context_id}")
async def remove_context(context_id: str, request: Request) -> Response:
    try:
        t = await _target(request)
        if t.st.kernels.get(t.sandbox_id, context_id) is None:
            raise E2bError(404, f"context {context_id} not found")
        await t.st.kernels.remove(t.sandbox_id, context_id)
        if t.st.kernels.defaults.get(t.sandbox_id) == context_id:
            t.st.kernels.defaults.pop(t.sandbox_id, None)
    except E2bError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.post("/contexts/{context_id}/restart")
async def restart_context(context_id: str, request: Request) -> Response:
    try:
        t = await _target(request)
        kernel = t.st.kernels.get(t.sandbox_id, context_id)
        if kernel is None:
            raise E2bError(404, f"context {context_id} not found")
        await kernel.interrupt()
        try:
            await asyncio.wait_for(kernel.lock.acquire(), 5)
        except TimeoutError:
            await kernel.stop()
            await kernel.lock.acquire()
        try:
            await kernel.start(t.c.inside)
        finally:
            kernel.lock.release()
    except E2bError as exc:
        return _error(exc)
    return Response(status_code=204)
