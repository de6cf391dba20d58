"""envd's processes as they live beyond a request: every started command is one
ExecStream kept by the registry (so it outlives the Start stream like an envd process
does), and a pump task per process reads the session and fans its events out to every
attached stream (`Subscriber`). The RPC service over it is `process.py`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal as signals
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cloche.e2b.connect import ConnectError, Message
from cloche.node.api import ExecStream
from cloche.node.errors import RuntimeFailure
from cloche.node.supervisor import ExecEvent

log = logging.getLogger("cloche.e2b")
OUTPUT_CAP = 1 << 40
MAX_BACKLOG = 16 << 20  # bytes queued for one slow stream before it is cut off
SIGNAL_NAMES = {
    1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction", 6: "aborted", 7: "bus error",
    8: "floating point exception", 9: "killed", 11: "segmentation fault", 13: "broken pipe",
    14: "alarm clock", 15: "terminated",
}  # fmt: skip
SIGNALS = {"SIGNAL_SIGTERM": signals.SIGTERM, "SIGNAL_SIGKILL": signals.SIGKILL}


def end_event(exit_code: int, signo: int) -> Message:
    """envd's EndEvent, the way Go's os.ProcessState reports it."""
    if signo:
        status = f"signal: {SIGNAL_NAMES.get(signo, str(signo))}"
        return {"exitCode": -1, "exited": False, "status": status, "error": status}
    end: Message = {"exitCode": exit_code, "exited": True, "status": f"exit status {exit_code}"}
    if exit_code:
        end["error"] = end["status"]
    return end


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.backlog = 0
        self.cut = False

    def put(self, event: Message, size: int = 0) -> None:
        if self.cut:
            return
        self.backlog += size
        if self.backlog > MAX_BACKLOG:
            self.cut = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


@dataclass
class Proc:
    sandbox_id: str
    pid: int
    config: Message
    tag: str | None
    pty: bool
    stdin: bool
    session: ExecStream
    events: AsyncIterator[ExecEvent]  # the session's one event stream, read by the pump
    subscribers: set[Subscriber] = field(default_factory=set)
    end: Message | None = None
    task: asyncio.Task[None] | None = None
    stdin_closed: bool = False

    def info(self) -> Message:
        out: Message = {"config": self.config, "pid": self.pid}
        if self.tag is not None:
            out["tag"] = self.tag
        return out

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        if self.end is not None:
            sub.put({"end": self.end})
            sub.queue.put_nowait(None)
        else:
            self.subscribers.add(sub)
        return sub

    def broadcast(self, event: Message, size: int = 0) -> None:
        for sub in list(self.subscribers):
            sub.put(event, size)


class ProcessRegistry:
    def __init__(self) -> None:
        self.procs: dict[str, dict[int, Proc]] = {}

    def of(self, sandbox_id: str) -> dict[int, Proc]:
        return self.procs.get(sandbox_id, {})

    def find(self, sandbox_id: str, selector: Message | None) -> Proc | None:
        selector = selector or {}
        procs = self.of(sandbox_id)
        if "pid" in selector:
            try:
                return procs.get(int(selector["pid"]))
            except (TypeError, ValueError):
                return None
        if "tag" in selector:
            return next((p for p in procs.values() if p.tag == selector["tag"]), None)
        raise ConnectError("invalid_argument", "a process selector needs a pid or a tag")

    def add(self, proc: Proc) -> None:
        self.procs.setdefault(proc.sandbox_id, {})[proc.pid] = proc
        proc.task = asyncio.create_task(self._pump(proc))

    def drop(self, sandbox_id: str) -> None:
        for proc in list(self.of(sandbox_id).values()):
            if proc.task is not None:
                proc.task.cancel()

    async def _pump(self, proc: Proc) -> None:
        end: Message | None = None
        try:
            async for ev in proc.events:
                if ev.kind in ("stdout", "stderr"):
                    kind = "pty" if proc.pty else ev.kind
                    data = base64.b64encode(ev.data).decode()
                    proc.broadcast({"data": {kind: data}}, len(ev.data))
                elif ev.kind == "exit":
                    end = end_event(ev.exit_code, ev.signal)
                    break
        except (RuntimeFailure, OSError) as exc:
            log.debug("process %s in %s ended: %s", proc.pid, proc.sandbox_id, exc)
        except asyncio.CancelledError:
            pass
        finally:
            if end is None:
                # The supervisor went away: the sandbox was killed, paused or hibernated.
                # Streams end the way envd's proxy ends them then, and the SDK raises its
                # SandboxNotRunningException.
                proc.end = {"exitCode": -1, "exited": False, "status": "signal: killed", "error": "sandbox stopped"}
                proc.broadcast({"gone": f"The sandbox {proc.sandbox_id} was not found (it was stopped or paused)"})
            else:
                proc.end = end
                proc.broadcast({"end": end})
            for sub in list(proc.subscribers):
                sub.queue.put_nowait(None)
            proc.subscribers.clear()
            procs = self.procs.get(proc.sandbox_id)
            if procs is not None and procs.get(proc.pid) is proc:
                del procs[proc.pid]
                if not procs:
                    self.procs.pop(proc.sandbox_id, None)
            with contextlib.suppress(BaseException):
                await proc.session.close()
