"""Long polls on the log: waiters per (tenant, namespace), woken by the engine that
committed an append (from any thread) and, where other processes may append too, by a
periodic re-read."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from cloche.state.engine import InvalidArgument, LogPage

Waiters = dict[tuple[str, str], list[tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]]]


def notify_waiters(waiters: Waiters, lock: threading.Lock, keys: set[tuple[str, str]]) -> None:
    with lock:
        woken = [w for k in keys for w in waiters.pop(k, [])]
    for loop, fut in woken:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_for_entries(engine: Any, waiters: Waiters, lock: threading.Lock, tenant: str, ns: str, after: int,
                           timeout_s: float, limit: int, poll_s: float | None = None) -> LogPage:  # fmt: skip
    """Long poll: entries after `after`, waiting up to timeout_s for the first one.
    Appends through this engine wake waiters at once; `poll_s` also re-reads
    periodically (PostgreSQL, where other servers may append)."""
    if not (0 <= timeout_s <= 300) or timeout_s != timeout_s:
        raise InvalidArgument("wait_s must be between 0 and 300")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        with lock:
            waiters.setdefault((tenant, ns), []).append((loop, fut))
        try:
            page = await engine.log_read(tenant, ns, after, limit)
            remaining = deadline - loop.time()
            if page.items or remaining <= 0:
                return page
            wait = remaining if poll_s is None else min(remaining, poll_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, wait)
        finally:
            with lock:
                lst = waiters.get((tenant, ns))
                if lst is not None:
                    with contextlib.suppress(ValueError):
                        lst.remove((loop, fut))
                    if not lst:
                        waiters.pop((tenant, ns), None)
