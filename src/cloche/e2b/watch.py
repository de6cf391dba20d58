"""Directory watching for envd's WatchDir stream and its poll-based watcher calls.

The host polls the directory (and, recursively, below it) through the path-safe
file layer and diffs snapshots: new names are CREATE, vanished ones REMOVE, a
changed size or mtime WRITE, a changed mode CHMOD. Polling works for every template
and survives the sandbox's own mounts; events arrive within POLL_S."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from cloche.e2b.fsops import E2bFS

POLL_S = 0.2
MAX_PENDING = 10_000
MAX_WATCHES = 32  # watchers plus WatchDir streams, per sandbox (each polls from the host)
Snapshot = dict[str, tuple[str, int, int, int]]


def diff(before: Snapshot, after: Snapshot) -> list[tuple[str, str]]:
    events = []
    for name, info in after.items():
        old = before.get(name)
        if old is None:
            events.append((name, "EVENT_TYPE_CREATE"))
        elif old[0] != info[0]:
            events += [(name, "EVENT_TYPE_REMOVE"), (name, "EVENT_TYPE_CREATE")]
        elif old[1:3] != info[1:3] and info[0] != "FILE_TYPE_DIRECTORY":
            events.append((name, "EVENT_TYPE_WRITE"))
        elif old[3] != info[3]:
            events.append((name, "EVENT_TYPE_CHMOD"))
    events += [(name, "EVENT_TYPE_REMOVE") for name in before if name not in after]
    return events


@dataclass
class Watch:
    sandbox_id: str
    fs: E2bFS
    path: str
    recursive: bool
    include_entry: bool
    snapshot: Snapshot = field(default_factory=dict)

    async def start(self) -> None:
        self.snapshot = await asyncio.to_thread(self.fs.scan, self.path, self.recursive)

    async def poll(self) -> list[dict[str, Any]]:
        now = await asyncio.to_thread(self.fs.scan, self.path, self.recursive)
        changes = diff(self.snapshot, now)
        self.snapshot = now
        out = []
        for name, kind in changes:
            event: dict[str, Any] = {"name": name, "type": kind}
            if self.include_entry and kind != "EVENT_TYPE_REMOVE":
                with contextlib.suppress(Exception):
                    event["entry"] = await asyncio.to_thread(self.fs.entry, f"{self.path.rstrip('/')}/{name}")
            out.append(event)
        return out

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            await asyncio.sleep(POLL_S)
            for event in await self.poll():
                yield event


@dataclass
class Watcher:
    watch: Watch
    pending: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class WatcherRegistry:
    """Watchers created with CreateWatcher and drained with GetWatcherEvents."""

    def __init__(self) -> None:
        self.watchers: dict[str, Watcher] = {}
        self.streams: dict[str, int] = {}

    def count(self, sandbox_id: str) -> int:
        own = sum(1 for w in self.watchers.values() if w.watch.sandbox_id == sandbox_id)
        return own + self.streams.get(sandbox_id, 0)

    def add(self, watch: Watch) -> str:
        watcher_id = "w_" + secrets.token_hex(8)
        w = Watcher(watch)

        async def run() -> None:
            async for event in watch.events():
                if len(w.pending) < MAX_PENDING:
                    w.pending.append(event)

        w.task = asyncio.create_task(run())
        self.watchers[watcher_id] = w
        return watcher_id

    def get(self, sandbox_id: str, watcher_id: str) -> Watcher | None:
        w = self.watchers.get(watcher_id)
        return w if w is not None and w.watch.sandbox_id == sandbox_id else None

    def remove(self, watcher_id: str) -> None:
        w = self.watchers.pop(watcher_id, None)
        if w is not None and w.task is not None:
            w.task.cancel()

    def drop(self, sandbox_id: str, keep: Callable[[Watcher], bool] = lambda w: False) -> None:
        for watcher_id, w in list(self.watchers.items()):
            if w.watch.sandbox_id == sandbox_id and not keep(w):
                self.remove(watcher_id)
