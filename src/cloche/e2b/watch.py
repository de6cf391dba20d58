"""envd's directory watches (the WatchDir stream and the CreateWatcher /
GetWatcherEvents / RemoveWatcher calls) over the node's `SandboxFiles.watch` stream:
the node reports changes as plain events, this module gives them envd's names and
entries, and keeps the watchers that are drained by polling."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from cloche.e2b.fsops import E2bFiles
from cloche.node.errors import FileError, RuntimeFailure
from cloche.node.watch import FsEvent

MAX_PENDING = 10_000
MAX_WATCHES = 32  # watchers plus WatchDir streams, per sandbox (each polls from the host)
EVENT_TYPES = {"create": "EVENT_TYPE_CREATE", "remove": "EVENT_TYPE_REMOVE", "write": "EVENT_TYPE_WRITE",
               "chmod": "EVENT_TYPE_CHMOD"}  # fmt: skip


@dataclass
class Watch:
    sandbox_id: str
    fs: E2bFiles
    path: str
    recursive: bool
    include_entry: bool
    changes: AsyncIterator[FsEvent] | None = None

    async def start(self) -> None:
        """Arm the watch: every change from now on is reported."""
        self.changes = await self.fs.files.watch(self.path, self.recursive)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """envd's FilesystemEvents; FileError `not_running` once the sandbox stops."""
        if self.changes is None:
            raise RuntimeError("start() the watch first")
        async for change in self.changes:
            event: dict[str, Any] = {"name": change.name, "type": EVENT_TYPES[change.kind]}
            if self.include_entry and change.kind != "remove":
                try:
                    event["entry"] = await self.fs.entry(f"{self.path.rstrip('/')}/{change.name}")
                except (FileError, RuntimeFailure):
                    pass  # gone again already
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
            try:
                async for event in watch.events():
                    if len(w.pending) < MAX_PENDING:
                        w.pending.append(event)
            except FileError:
                pass  # the sandbox stopped: its watchers are dropped with it

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
