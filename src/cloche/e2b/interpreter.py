"""e2b-code-interpreter's API (its port 49999): `POST /execute` streams a cell's
output as JSON lines, `/contexts` creates, lists, restarts and removes contexts.

A context is one long-lived Python kernel (kernel.py, run with `python3 -c`) in a
supervisor session; variables persist in it between executions. One execution runs
at a time per context. When the caller goes away mid-cell (E2B's timeout is
client-side), the cell is interrupted with SIGINT. A kernel that died (the sandbox
was paused, or the code called os._exit) is started again on the next execution,
with a fresh namespace.

`Kernel` and `KernelRegistry` are also cloche's own code interpreter
(`POST /v1/sandboxes/{id}/code`, server/routes/code.py), with a registry whose kernels
run as the sandbox's root in /workspace, like its exec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cloche.e2b.state import JUPYTER_PORT, EnvdError, Target, target
from cloche.e2b.users import USER, User
from cloche.node.errors import RuntimeFailure
from cloche.node.protocol import ExecRequest
from cloche.node.runtime import NodeRuntime
from cloche.node.supervisor import ExecSession

router = APIRouter(include_in_schema=False)
KERNEL_SOURCE = (Path(__file__).parent / "kernel.py").read_text()
LANGUAGES = {None: "python", "": "python", "python": "python", "python3": "python"}
MAX_LINE = 64 << 20
MAX_CONTEXTS = 32  # per sandbox


class KernelDied(Exception):
    pass


class Kernel:
    def __init__(self, context_id: str, sandbox_id: str, cwd: str, user: User) -> None:
        self.id = context_id
        self.sandbox_id = sandbox_id
        self.language = "python"
        self.cwd = cwd
        self.user = user
        self.session: ExecSession | None = None
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def info(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def start(self, runtime: NodeRuntime) -> None:
        await self.stop()
        user = self.user
        req = ExecRequest(cmd=["python3", "-u", "-c", KERNEL_SOURCE], cwd=self.cwd, uid=user.uid, gid=user.gid,
                          env={"HOME": user.home, "USER": user.name, "PYTHONUNBUFFERED": "1"},
                          output_cap=1 << 50, interactive=True)  # fmt: skip
        self.session = await runtime.exec_session(self.sandbox_id, req)
        self.queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read(self.session, self.queue))
        first = await asyncio.wait_for(self.queue.get(), 30)
        if first is None or first.get("type") != "ready":
            detail = (first or {}).get("text", "")
            await self.stop()
            raise EnvdError(500, f"the Python kernel did not start (is python3 in the sandbox?) {detail}".strip())

    @staticmethod
    async def _read(session: ExecSession, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        buf = b""
        err = b""
        try:
            async for ev in session.events():
                if ev.kind == "stdout":
                    buf += ev.data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        with contextlib.suppress(ValueError):
                            queue.put_nowait(json.loads(line))
                    if len(buf) > MAX_LINE:
                        buf = b""
                elif ev.kind == "stderr" and len(err) < 65536:
                    err += ev.data
                elif ev.kind == "exit":
                    break
        except (RuntimeFailure, OSError):
            pass
        finally:
            if err:
                queue.put_nowait({"type": "stderr", "text": err.decode(errors="replace"), "dead": True})
            queue.put_nowait(None)
            with contextlib.suppress(BaseException):
                await session.close()

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
            self.reader = None
        if self.session is not None:
            with contextlib.suppress(BaseException):
                await self.session.close()
            self.session = None

    async def interrupt(self) -> None:
        if self.session is not None:
            with contextlib.suppress(BaseException):
                await self.session.signal(signal.SIGINT)

    async def execute(self, runtime: NodeRuntime, code: str, env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The cell's events; the caller holds self.lock."""
        if not self.alive:
            await self.start(runtime)
        assert self.session is not None
        await self.session.write_stdin(json.dumps({"code": code, "env": env}).encode() + b"\n")
        while True:
            event = await self.queue.get()
            if event is None:
                raise KernelDied()
            if event.get("dead"):
                continue
            if event.get("type") == "done":
                return
            yield event


class KernelRegistry:
    """The kernels of each sandbox, all run as `user`; new contexts start in `cwd`."""

    def __init__(self, user: User = USER, cwd: str = USER.home) -> None:
        self.kernels: dict[str, dict[str, Kernel]] = {}
        self.defaults: dict[str, str] = {}
        self.user = user
        self.cwd = cwd

    def of(self, sandbox_id: str) -> dict[str, Kernel]:
        return self.kernels.setdefault(sandbox_id, {})

    def get(self, sandbox_id: str, context_id: str) -> Kernel | None:
        return self.kernels.get(sandbox_id, {}).get(context_id)

    def default(self, sandbox_id: str) -> Kernel:
        context_id = self.defaults.get(sandbox_id)
        kernel = self.get(sandbox_id, context_id) if context_id else None
        if kernel is None:
            kernel = self.add(sandbox_id, self.cwd)
            self.defaults[sandbox_id] = kernel.id
        return kernel

    def add(self, sandbox_id: str, cwd: str) -> Kernel:
        kernel = Kernel(secrets.token_hex(8), sandbox_id, cwd, self.user)
        self.of(sandbox_id)[kernel.id] = kernel
        return kernel

    async def remove(self, sandbox_id: str, context_id: str) -> None:
        kernel = self.of(sandbox_id).pop(context_id, None)
        if kernel is not None:
            await kernel.stop()

    def drop(self, sandbox_id: str) -> None:
        """The sandbox stopped: its kernels died with it (the reader tasks notice).
        The contexts stay; they start a new kernel on their next execution."""

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone for good."""
        for kernel in self.kernels.pop(sandbox_id, {}).values():
            if kernel.reader is not None:
                kernel.reader.cancel()
        self.defaults.pop(sandbox_id, None)


async def _target(request: Request) -> Target:
    return await target(request, port=JUPYTER_PORT)


def _error(exc: EnvdError) -> Response:
    return Response(exc.message, exc.status, media_type="text/plain")


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise EnvdError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise EnvdError(400, "request body must be a JSON object")
    return body


def _language(value: Any) -> str:
    if value not in LANGUAGES:
        raise EnvdError(400, f"language {value!r} is not supported by cloche's code interpreter (only python)")
    return LANGUAGES[value]


@router.post("/execute")
async def execute(request: Request) -> Response:
    try:
        t = await _target(request)
        body = await _json(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise EnvdError(400, "code is required")
        env = {str(k): str(v) for k, v in (body.get("env_vars") or {}).items()}
        registry: KernelRegistry = t.st.kernels
        if body.get("context_id"):
            if body.get("language"):
                raise EnvdError(400, "give context_id or language, not both")
            kernel = registry.get(t.sandbox_id, str(body["context_id"]))
            if kernel is None:
                raise EnvdError(404, f"context {body['context_id']} not found")
        else:
            _language(body.get("language"))
            kernel = registry.default(t.sandbox_id)
        await kernel.lock.acquire()
    except EnvdError as exc:
        return _error(exc)

    async def lines() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(cell(kernel, t.c.runtime, code, env)) as events:
            async for event in events:
                yield json.dumps(event).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})


async def cell(kernel: Kernel, runtime: NodeRuntime, code: str, env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    """Run a cell: its events, a dead kernel or one that would not start as a last
    `error` event. The caller holds `kernel.lock`; it is released when the cell ends, or
    once the cell is interrupted should the caller stop iterating first (it went away,
    or timed out): close this generator (`contextlib.aclosing`) for that."""
    finished = False
    try:
        async for event in kernel.execute(runtime, code, env):
            yield event
        finished = True
    except KernelDied:
        finished = True
        yield {"type": "error", "name": "KernelDied", "value": "the Python kernel exited",
               "traceback": "the kernel process exited; the next execution starts a new one"}  # fmt: skip
    except EnvdError as exc:
        finished = True
        yield {"type": "error", "name": "KernelError", "value": exc.message, "traceback": exc.message}
    finally:
        if finished:
            kernel.lock.release()
        else:
            asyncio.get_running_loop().create_task(_interrupt_and_drain(kernel))


async def _interrupt_and_drain(kernel: Kernel) -> None:
    """The caller left mid-cell: interrupt it, wait for the kernel to finish, free it."""
    try:
        await kernel.interrupt()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                await kernel.stop()
                return
            try:
                event = await asyncio.wait_for(kernel.queue.get(), left)
            except TimeoutError:
                await kernel.stop()
                return
            if event is None or event.get("type") == "done":
                return
    finally:
        kernel.lock.release()


@router.post("/contexts")
async def create_context(request: Request) -> Response:
    try:
        t = await _target(request)
        body = await _json(request)
        _language(body.get("language"))
        cwd = body.get("cwd") or USER.home
        if not isinstance(cwd, str):
            raise EnvdError(400, "cwd must be a string")
        if len(t.st.kernels.of(t.sandbox_id)) >= MAX_CONTEXTS:
            raise EnvdError(429, f"at most {MAX_CONTEXTS} contexts per sandbox; remove one first")
        kernel = t.st.kernels.add(t.sandbox_id, cwd)
        try:
            async with kernel.lock:
                await kernel.start(t.c.runtime)
        except BaseException:
            await t.st.kernels.remove(t.sandbox_id, kernel.id)
            raise
    except EnvdError as exc:
        return _error(exc)
    return JSONResponse(kernel.info())


@router.get("/contexts")
async def list_contexts(request: Request) -> Response:
    try:
        t = await _target(request)
    except EnvdError as exc:
        return _error(exc)
    return JSONResponse([k.info() for k in t.st.kernels.of(t.sandbox_id).values()])


@router.delete("/contexts/{context_id}")
async def remove_context(context_id: str, request: Request) -> Response:
    try:
        t = await _target(request)
        if t.st.kernels.get(t.sandbox_id, context_id) is None:
            raise EnvdError(404, f"context {context_id} not found")
        await t.st.kernels.remove(t.sandbox_id, context_id)
        if t.st.kernels.defaults.get(t.sandbox_id) == context_id:
            t.st.kernels.defaults.pop(t.sandbox_id, None)
    except EnvdError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.post("/contexts/{context_id}/restart")
async def restart_context(context_id: str, request: Request) -> Response:
    try:
        t = await _target(request)
        kernel = t.st.kernels.get(t.sandbox_id, context_id)
        if kernel is None:
            raise EnvdError(404, f"context {context_id} not found")
        await kernel.interrupt()
        try:
            await asyncio.wait_for(kernel.lock.acquire(), 5)
        except TimeoutError:
            await kernel.stop()
            await kernel.lock.acquire()
        try:
            await kernel.start(t.c.runtime)
        finally:
            kernel.lock.release()
    except EnvdError as exc:
        return _error(exc)
    return Response(status_code=204)
