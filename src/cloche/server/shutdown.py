"""Stopping `cloche up` the way supervisors do: SIGTERM (or SIGINT), then maybe another.

uvicorn's own handling stops serving and then re-raises the signal, so the process dies
of it and whatever it owns stays behind. Here the first signal starts a drain: new
requests get 503 with Retry-After, requests in flight may finish within
`shutdown_grace_s`, and then the node brings every sandbox to a safe state (hibernated by
default, so its user loses no file; or killed) and the process exits 0. A second signal
forces a fast exit that still kills and unmounts everything the node owns.

The same server class also ends its start by freezing what startup built (modules, the
app, services, caches) out of the garbage collector: a full collection otherwise walks all
of it while the event loop waits, stalling every request in flight (the tail of KV
latency in BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Generator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from cloche.server.errors import error_response

log = logging.getLogger("cloche.shutdown")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Drain:
    """Where the server is in stopping: serving, draining, or forced out."""

    draining: bool = False
    forced: bool = False
    cleaned: bool = False  # the app's shutdown (sandboxes made safe) has started
    retry_after_s: int = 5


class DrainGate:
    """ASGI middleware: while draining, new requests are refused with 503 + Retry-After
    (requests already inside run to completion)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drain.draining or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1012})  # service restart
            return
        response = error_response(503, "shutting_down", "the server is shutting down; retry shortly",
                                  {"Retry-After": str(self.drain.retry_after_s), "Connection": "close"})  # fmt: skip
        await response(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with cloche's signal handling: drain on the first signal, force
    on the second, and exit normally (status 0) instead of dying of the signal."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.collect()
        gc.freeze()  # a full collection now scans only what requests create, not the server itself

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit and not self.drain.cleaned:
            await self.lifespan.shutdown()  # forced: uvicorn skips it, but what we own must still go

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if not self.drain.draining:
            log.info("%s: draining (new requests get 503; in-flight ones have %ss)", name,
                     self.config.timeout_graceful_shutdown)  # fmt: skip
            self.drain.draining = True
            self.should_exit = True
        elif not self.drain.forced:
            log.warning("%s again: forcing exit (sandboxes are stopped, not hibernated)", name)
            self.drain.forced = True
            self.force_exit = True
