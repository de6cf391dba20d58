"""What takes more than one request, written once for both clients.

A flow is a generator that yields the :class:`~cloche.client._api.Call` objects it needs
and receives each one's result (or, thrown in, its :class:`ClocheError`); a
:class:`Stream` also yields :class:`Items` to hand to its caller.  Neither does I/O, so
``Client`` drives them blocking and ``AsyncClient`` awaiting (sans-I/O, as h11 does for
HTTP): waits, polling, pagination and "missing is fine" live here once instead of in
both faces.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import _api
from .errors import NotFound
from .models import KeyInfo, LogEntry, LogPage, SandboxInfo, StateValue

T = TypeVar("T")

Flow = Generator[_api.Call[Any], Any, T]
"""Yields calls, receives their results, returns the flow's result."""


@dataclass(frozen=True)
class Items(Generic[T]):
    """Values a :data:`Stream` hands to its caller before it goes on."""

    values: Sequence[T]


Stream = Generator[_api.Call[Any] | Items[T], Any, None]
"""Yields calls (receiving their results) and :class:`Items` (receiving ``None``)."""


def connect(sandbox_id: str) -> Flow[SandboxInfo]:
    """The sandbox, resumed first if it is paused."""
    info: SandboxInfo = yield _api.get_sandbox(sandbox_id)
    if info.state == "paused":
        info = yield _api.resume(sandbox_id)
    return info


def exists(sandbox_id: str, path: str) -> Flow[bool]:
    """Whether anything exists at ``path`` in the sandbox."""
    try:
        yield _api.stat(sandbox_id, path)
    except NotFound:
        return False
    return True


def kill(sandbox_id: str, missing_ok: bool) -> Flow[None]:
    """Destroy the sandbox; a sandbox already gone is fine with ``missing_ok``."""
    try:
        yield _api.kill_sandbox(sandbox_id)
    except NotFound:
        if not missing_ok:
            raise


def url(sandbox_id: str, port: int, signed: bool, expires_s: int) -> Flow[str]:
    """The host-form URL of ``port``, or its signed URL (a public sandbox has none)."""
    urls = yield _api.port_urls(sandbox_id, port, expires_s)
    return (urls.signed_url or urls.url) if signed else urls.url


def agent_sandbox(app: str, key: str) -> Flow[SandboxInfo]:
    """The sandbox of an app's agent."""
    agent = yield _api.get_agent(app, key)
    return (yield _api.get_sandbox(agent.sandbox_id))


def kv_get(namespace: str, key: str) -> Flow[StateValue | None]:
    """The value of ``key``, or ``None`` if it does not exist."""
    try:
        return (yield _api.kv_get(namespace, key))
    except NotFound:
        return None


def wait(namespace: str, after: int, timeout_s: float, limit: int) -> Flow[LogPage]:
    """Log entries after ``after``, waiting up to ``timeout_s`` in long polls of at most
    :data:`~cloche.client._api.LONG_POLL_S`; the page is empty if none came."""
    deadline = time.monotonic() + timeout_s
    remaining = timeout_s
    while True:
        wait_s = min(remaining, _api.LONG_POLL_S)
        page: LogPage = yield _api.log_read(namespace, after, limit, wait_s=wait_s)
        if page.items or remaining <= _api.LONG_POLL_S:
            return page
        remaining = max(0.0, deadline - time.monotonic())


def keys(namespace: str, prefix: str, page_size: int) -> Stream[KeyInfo]:
    """Every live key under ``prefix``, a page of ``page_size`` at a time."""
    cursor: str | None = None
    while True:
        page = yield _api.kv_list(namespace, prefix, cursor, page_size)
        yield Items(page.items)
        cursor = page.next_cursor
        if not cursor:
            return


def follow(namespace: str, after: int, wait_s: float) -> Stream[LogEntry]:
    """The log's entries after ``after``, then new ones as they come, forever."""
    while True:
        page = yield from wait(namespace, after, wait_s, 100)
        yield Items(page.items)
        if page.items:
            after = page.items[-1].seq
