"""The code interpreter's kernels: a context is one long-lived Python kernel (kernel.py,
run with `python3 -c`) in a supervisor session; variables persist in it between
executions. One execution runs at a time per context. When the caller goes away
mid-cell, the cell is interrupted with SIGINT. A kernel that died (the sandbox was
paused, or the code called os._exit) is started again on the next execution, with a
fresh namespace.

`Kernel` and `KernelRegistry` serve e2b-code-interpreter's API (`jupyter.py`) and
cloche's own code interpreter (`POST /v1/sandboxes/{id}/code`, server/routes/code.py),
with a registry whose kernels run as the sandbox's root in /workspace, like its exec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cloche.e2b.errors import E2bError
from cloche.e2b.users import USER, User
from cloche.node.api import ExecStream, Node
from cloche.node.errors import RuntimeFailure
from cloche.node.protocol import ExecRequest

KERNEL_SOURCE = (Path(__file__).parent / "kernel.py").read_text()
MAX_LINE = 64 << 20


class KernelDied(Exception):
    pass


class Kernel:
    def __init__(self, context_id: str, sandbox_id: str, cwd: str, user: User) -> None:
        self.id = context_id
        self.sandbox_id = sandbox_id
        self.language = "python"
        self.cwd = cwd
        self.user = user
        self.session: ExecStream | None = None
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def info(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def start(self, runtime: Node) -> None:
        await self.stop()
        user = self.user
        req = ExecRequest(cmd=["python3", "-u", "-c", KERNEL_SOURCE], cwd=self.cwd, uid=user.uid, gid=user.gid,
                          env={"HOME": user.home, "USER": user.name, "PYTHONUNBUFFERED": "1"},
                          output_cap=1 << 50, interactive=True)  # fmt: skip
        self.session = await runtime.open_exec(self.sandbox_id, req)
        self.queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read(self.session, self.queue))
        first = await asyncio.wait_for(self.queue.get(), 30)
        if first is None or first.get("type") != "ready":
            detail = (first or {}).get("text", "")
            await self.stop()
            raise E2bError(500, f"the Python kernel did not start (is python3 in the sandbox?) {detail}".strip())

    @staticmethod
    async def _read(session: ExecStream, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
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

    async def execute(self, runtime: Node, code: str, env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
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


async def cell(kernel: Kernel, runtime: Node, code: str, env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
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
    except E2bError as exc:
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
