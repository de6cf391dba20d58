"""envd's `process.Process` service over the node's exec streams (`Node.open_exec`).

Every started command is one ExecStream kept by the registry (not by the request), so
it outlives the Start stream like an envd process does: Connect re-attaches to its
output, SendInput/StreamInput/CloseStdin feed it, SendSignal signals its process group,
Update resizes its PTY, List shows it. A pump task per process reads the session and
fans events out to every attached stream. Pids are the command's pid inside the
sandbox's pid namespace, as the supervisor reports them."""

from __future__ import annotations

import base64
import contextlib
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from cloche.e2b import connect
from cloche.e2b.connect import ConnectError, Message
from cloche.e2b.errors import E2bError, as_connect
from cloche.e2b.procs import OUTPUT_CAP, SIGNALS, Proc, Subscriber
from cloche.e2b.state import Target, target
from cloche.e2b.users import User, name_from
from cloche.node.errors import RuntimeFailure
from cloche.node.protocol import ExecRequest
from cloche.node.supervisor import ExecEvent


def _events(sub: Subscriber) -> AsyncIterator[Message]:
    async def gen() -> AsyncIterator[Message]:
        while True:
            event = await sub.queue.get()
            if event is None:
                if sub.cut:
                    raise ConnectError("resource_exhausted", "the client read the output too slowly")
                return
            if "gone" in event:
                raise ConnectError("unavailable", event["gone"])
            yield {"event": event}
            if "end" in event:
                return

    return gen()


async def _user(request: Request, t: Target) -> User:
    try:
        return await t.user(name_from(request))
    except E2bError as exc:
        raise as_connect(exc) from None


async def _target(request: Request) -> Target:
    try:
        return await target(request)
    except E2bError as exc:
        raise as_connect(exc) from None


def _env_for(user: User, t: Target) -> dict[str, str]:
    spec_env = t.node.get(t.sandbox_id).spec.env
    env = {}
    for key, value in (("HOME", user.home), ("USER", user.name), ("LOGNAME", user.name)):
        if key not in spec_env:
            env[key] = value
    return env


async def start(request: Request) -> Response:
    return await connect.streaming(lambda: _start(request))


async def _start(request: Request) -> Response:
    msg = await connect.read_first(request)
    t = await _target(request)
    user = await _user(request, t)
    config = msg.get("process") or {}
    cmd = config.get("cmd")
    if not cmd or not isinstance(cmd, str):
        raise ConnectError("invalid_argument", "process.cmd is required")
    args = [str(a) for a in config.get("args") or []]
    envs = {str(k): str(v) for k, v in (config.get("envs") or {}).items()}
    if any(not k or "=" in k or "\0" in k for k in envs) or any("\0" in a for a in [cmd, *args]):
        raise ConnectError("invalid_argument", "NUL bytes, '=' or empty names in the command or its env")
    cwd = str(config.get("cwd") or user.home)
    if "\0" in cwd:
        raise ConnectError("invalid_argument", "cwd contains a NUL byte")
    if not cwd.startswith("/"):
        cwd = f"{user.home.rstrip('/')}/{cwd}"
    pty = msg.get("pty")
    size = (pty or {}).get("size") or {}
    stdin = bool(msg.get("stdin")) or pty is not None
    req = ExecRequest(cmd=[cmd, *args], env={**_env_for(user, t), **envs}, cwd=cwd, uid=user.uid,
                      gid=user.gid, output_cap=OUTPUT_CAP, timeout_s=connect.timeout_s(request),
                      pty=pty is not None, rows=int(size.get("rows") or 24), cols=int(size.get("cols") or 80),
                      interactive=stdin)  # fmt: skip
    try:
        session = await t.node.open_exec(t.sandbox_id, req)
    except RuntimeFailure as exc:
        raise ConnectError("unavailable", f"The sandbox {t.sandbox_id} was not found ({exc})") from None
    events = session.events()  # one stream of events: the pump carries on after the start
    first = await _first_event(events)
    if first.kind != "start":
        await session.close()
        detail = first.data.decode(errors="replace").strip()
        raise ConnectError("invalid_argument", f"failed to start the process: {detail}")
    proc = Proc(t.sandbox_id, first.pid, {"cmd": cmd, "args": args, "envs": envs, "cwd": cwd},
                msg.get("tag"), pty is not None, stdin, session, events)  # fmt: skip
    t.st.processes.add(proc)
    return _attach(request, proc)  # subscribed before the pump task first runs


def _attach(request: Request, proc: Proc) -> Response:
    """The process's event stream for one client, from its start event on."""
    sub = proc.subscribe()

    async def unsubscribe() -> None:
        proc.subscribers.discard(sub)

    return connect.stream({"event": {"start": {"pid": proc.pid}}}, _events(sub),
                          keepalive={"event": {"keepalive": {}}}, interval=connect.keepalive_s(request),
                          on_close=unsubscribe)  # fmt: skip


@dataclass
class _First:
    kind: str
    pid: int = 0
    data: bytes = b""


async def _first_event(events: AsyncIterator[ExecEvent]) -> _First:
    """Read up to the start event; a command that fails to start (missing cwd or
    binary) sends stderr and an exit instead. The stream is left open after the start
    event: the process's pump reads the rest of it."""
    err = b""
    try:
        async for ev in events:
            if ev.kind == "start":
                return _First("start", pid=ev.pid)
            if ev.kind == "stderr":
                err += ev.data
            if ev.kind == "exit":
                return _First("exit", data=err or f"exit code {ev.exit_code}".encode())
    except RuntimeFailure as exc:
        return _First("exit", data=str(exc).encode())
    return _First("exit", data=err)


async def connect_process(request: Request) -> Response:
    async def call() -> Response:
        msg = await connect.read_first(request)
        t = await _target(request)
        proc = t.st.processes.find(t.sandbox_id, msg.get("process"))
        if proc is None or proc.end is not None:
            raise ConnectError("not_found", "process not found")
        return _attach(request, proc)

    return await connect.streaming(call)


async def list_processes(request: Request) -> Response:
    async def call() -> Message:
        await connect.read_unary(request)
        t = await _target(request)
        procs = [p.info() for p in t.st.processes.of(t.sandbox_id).values() if p.end is None]
        return {"processes": procs}

    return await connect.unary(call)


def _signal_number(value: Any) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in SIGNALS:
        return int(SIGNALS[value])
    raise ConnectError("invalid_argument", f"unsupported signal {value!r}")


async def send_signal(request: Request) -> Response:
    async def call() -> Message:
        msg = await connect.read_unary(request)
        t = await _target(request)
        signo = _signal_number(msg.get("signal", 0))
        if signo <= 0:
            raise ConnectError("invalid_argument", "signal is required")
        selector = msg.get("process") or {}
        proc = t.st.processes.find(t.sandbox_id, selector)
        if proc is not None and proc.end is None:
            try:
                await proc.session.signal(signo)
            except (ConnectionError, OSError):
                raise ConnectError("not_found", "process not found") from None
            return {}
        if "pid" not in selector:
            raise ConnectError("not_found", "process not found")
        try:
            err = await t.node.signal(t.sandbox_id, int(selector["pid"]), signo)
        except (RuntimeFailure, ValueError) as exc:
            raise ConnectError("not_found", f"process not found ({exc})") from None
        if err == errno.ESRCH or err == errno.EINVAL:
            raise ConnectError("not_found", "process not found")
        if err:
            raise ConnectError("permission_denied", f"cannot signal the process: {errno.errorcode.get(err, err)}")
        return {}

    return await connect.unary(call)


def _live(t: Target, selector: Message | None) -> Proc:
    proc = t.st.processes.find(t.sandbox_id, selector)
    if proc is None or proc.end is not None:
        raise ConnectError("not_found", "process not found")
    return proc


def _input_bytes(value: Message | None, proc: Proc) -> bytes:
    value = value or {}
    raw = value.get("pty") if "pty" in value else value.get("stdin")
    if raw is None:
        return b""
    try:
        return base64.b64decode(raw)
    except ValueError:
        raise ConnectError("invalid_argument", "input must be base64") from None


async def _write(proc: Proc, data: bytes) -> None:
    if not proc.stdin:
        raise ConnectError("failed_precondition", "stdin is not enabled for this process (start it with stdin=True)")
    if proc.stdin_closed:
        raise ConnectError("failed_precondition", "stdin of this process is closed")
    if data:
        try:
            await proc.session.write_stdin(data)
        except (ConnectionError, OSError):
            raise ConnectError("not_found", "process not found") from None


async def send_input(request: Request) -> Response:
    async def call() -> Message:
        msg = await connect.read_unary(request)
        t = await _target(request)
        proc = _live(t, msg.get("process"))
        await _write(proc, _input_bytes(msg.get("input"), proc))
        return {}

    return await connect.unary(call)


async def stream_input(request: Request) -> Response:
    """Client stream: a start event naming the process, then data and keepalives."""

    async def call() -> Response:
        t = await _target(request)
        proc: Proc | None = None
        async for msg in connect.iter_messages(request):
            if "start" in msg:
                proc = _live(t, (msg["start"] or {}).get("process"))
            elif "data" in msg:
                if proc is None:
                    raise ConnectError("failed_precondition", "the first message must be a start event")
                await _write(proc, _input_bytes((msg["data"] or {}).get("input"), proc))
        if proc is None:
            raise ConnectError("invalid_argument", "no start event")
        return Response(connect.envelope({}) + connect.end_stream(), media_type=connect.STREAM_TYPE)

    return await connect.streaming(call)


async def close_stdin(request: Request) -> Response:
    async def call() -> Message:
        msg = await connect.read_unary(request)
        t = await _target(request)
        proc = _live(t, msg.get("process"))
        if not proc.stdin:
            raise ConnectError("failed_precondition", "stdin is not enabled for this process")
        if not proc.stdin_closed:
            with contextlib.suppress(ConnectionError, OSError):
                await proc.session.close_stdin()
            proc.stdin_closed = not proc.pty
        return {}

    return await connect.unary(call)


async def update(request: Request) -> Response:
    async def call() -> Message:
        msg = await connect.read_unary(request)
        t = await _target(request)
        proc = _live(t, msg.get("process"))
        size = (msg.get("pty") or {}).get("size")
        if size:
            if not proc.pty:
                raise ConnectError("failed_precondition", "the process has no PTY")
            with contextlib.suppress(ConnectionError, OSError):
                await proc.session.resize(int(size.get("rows") or 24), int(size.get("cols") or 80))
        return {}

    return await connect.unary(call)


METHODS = {
    "Start": start,
    "Connect": connect_process,
    "List": list_processes,
    "SendSignal": send_signal,
    "SendInput": send_input,
    "StreamInput": stream_input,
    "CloseStdin": close_stdin,
    "Update": update,
}
