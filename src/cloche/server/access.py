"""The access log: one JSON line per request on the `cloche.access` logger, written by a
pure ASGI middleware (a `BaseHTTPMiddleware` would buffer streamed responses).

    {"time": "2025-01-02T03:04:05.678+00:00", "method": "POST", "path": "/v1/sandboxes/{sandbox_id}/exec",
     "status": 200, "duration_ms": 12.345, "tenant_id": "t_...", "sandbox_id": "sb_...", "request_id": "..."}

`time` is when the request arrived; `path` is the template of the route that answered
(null when none did), never the path as sent, so no query string, token or file name
lands in the log; nor do headers or bodies. `tenant_id` is set once the request
authenticated, `sandbox_id` when the path names one. `request_id` is the client's
`X-Request-Id` when it is a plain token, else a new one, and comes back in the response's
`X-Request-Id`. A streamed answer (SSE, WebSocket, a proxied port) is logged once, when
it ends; a WebSocket's status is 101 once accepted, 403 when closed before that, and a
request whose client left before any answer has status null.

On by default; `CLOCHE_ACCESS_LOG=0` turns it off (`Settings.access_log`). `cloche up`
writes the lines of one event-loop turn to stderr in one write (`BatchedHandler`), not
one syscall per request, and writes what is pending when the process exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import random
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cloche.access")
NOTES = "cloche.access"  # scope key: what the request's handlers tell the log (note())
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_ids = random.Random(os.urandom(16))  # request ids need to be unique, not secret: no syscall per request
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))  # a forked server: ids of its own
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def note(scope: Scope, **fields: str) -> None:
    """Tell the access log about the request: `tenant_id` once authenticated, and
    `path` (a template) and `sandbox_id` where no route's template says it."""
    notes = scope.get(NOTES)
    if notes is not None:
        notes.update(fields)


def request_id(scope: Scope) -> str | None:
    """The request's id, as logged (None with the access log off)."""
    return scope.get(NOTES, {}).get("request_id")


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that never writes on the event loop: the lines emitted within
    BATCH_S are handed, as one batch, to a writer thread that writes each batch in one
    write. A write can wait for the disk (a file on the disk the state engine fsyncs): it
    must not stall every request; and one hand-over per batch, not per line, keeps the
    thread wake-ups off the loop too. A thread without a running loop has its line written
    before `log.info` returns. `flush()` returns once everything emitted is written:
    `logging.shutdown` calls it at exit, so no line is lost."""

    BATCH_S = 0.005

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._batches: queue.SimpleQueue[str | threading.Event] = queue.SimpleQueue()
        threading.Thread(target=self._write_batches, name="cloche-access-log", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.BATCH_S, self._hand_over)
            except RuntimeError:  # no loop in this thread: written before the call returns
                self.flush()

    def _hand_over(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                self._batches.put("\n".join(self._pending) + "\n")
                self._pending.clear()

    def _write_batches(self) -> None:
        while True:
            batch = self._batches.get()
            if isinstance(batch, threading.Event):  # flush(): everything before it is written
                batch.set()
                continue
            try:
                self.stream.write(batch)
                self.stream.flush()
            except Exception:  # a closed or broken stream: these lines are lost, the server goes on
                pass

    def flush(self) -> None:
        self._hand_over()
        written = threading.Event()
        self._batches.put(written)
        written.wait()


def to_stderr() -> None:
    """Write the access log to stderr as bare JSON lines (no logging prefix)."""
    if not log.handlers:
        handler = BatchedHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def new_request_id(sent: bytes | None = None) -> bytes:
    """The client's X-Request-Id when it is a plain token, else a new one."""
    if sent is not None and REQUEST_ID.fullmatch(sent):
        return sent
    return b"%024x" % _ids.getrandbits(96)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return new_request_id(value)
    return new_request_id()


def write(arrived: float, method: str, path: str | None, status: int | None, duration_s: float,
          tenant_id: str | None, sandbox_id: str | None, request_id: str) -> None:  # fmt: skip
    """Log one request's line (the logger's record is made directly: no caller lookup)."""
    if not log.isEnabledFor(logging.INFO):
        return
    line = (f'{{"time":"{datetime.fromtimestamp(arrived, UTC).isoformat(timespec="milliseconds")}",'
            f'"method":{_json(method)},"path":{_json(path)},"status":{"null" if status is None else int(status)},'
            f'"duration_ms":{round(duration_s * 1000, 3)!r},"tenant_id":{_json(tenant_id)},'
            f'"sandbox_id":{_json(sandbox_id)},"request_id":{_json(request_id)}}}')  # fmt: skip
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None))


def _json(value: str | None) -> str:
    """A string as json.dumps writes it (the line is made by hand: a dict and the encoder cost more)."""
    return "null" if value is None else _quote(value)


def _template(scope: Scope, root_path: str) -> str | None:
    """The answering route's path template, with the prefix of any app it is mounted in."""
    path_format = getattr(scope.get("route"), "path_format", None)
    if path_format is None:
        return None
    return scope.get("root_path", "")[len(root_path) :] + path_format


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        arrived, started = time.time(), time.perf_counter()
        root_path = scope.get("root_path", "")
        request_id = _request_id(scope)
        notes = {"request_id": request_id.decode()}
        scope[NOTES] = notes
        status: int | None = None

        async def logged_send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.http.response.start":
                status = message["status"]
                # A message is sent once: change it in place rather than copy it.
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and status is None:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except Exception:
            status = status or 500  # answered by Starlette's ServerErrorMiddleware, outside this one
            raise
        finally:
            sandbox_id = notes.get("sandbox_id") or scope.get("path_params", {}).get("sandbox_id")
            write(arrived, scope.get("method", "WEBSOCKET"), notes.get("path") or _template(scope, root_path), status,
                  time.perf_counter() - started, notes.get("tenant_id"), sandbox_id, notes["request_id"])  # fmt: skip
