"""envd's `filesystem.Filesystem` service (Stat, ListDir, MakeDir, Move, Remove,
WatchDir and the CreateWatcher / GetWatcherEvents / RemoveWatcher calls) over the
node's file streams (fsops.E2bFiles, watch.Watch). Paths are relative to the acting user's home unless absolute;
new files and directories belong to that user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request, Response

from cloche.e2b import connect
from cloche.e2b.connect import ConnectError, Message
from cloche.e2b.errors import E2bError, as_connect
from cloche.e2b.fsops import E2bFiles, connect_code
from cloche.e2b.state import Target, target
from cloche.e2b.users import name_from
from cloche.e2b.watch import MAX_WATCHES, Watch
from cloche.node.errors import FileError, RuntimeFailure

T = TypeVar("T")


async def _fs(request: Request) -> tuple[Target, E2bFiles]:
    try:
        t = await target(request)
        return t, E2bFiles(t.files(), await t.user(name_from(request)))
    except E2bError as exc:
        raise as_connect(exc) from None


async def _run(call: Awaitable[T]) -> T:
    try:
        return await call
    except FileError as exc:
        raise ConnectError(connect_code(exc), str(exc)) from None
    except RuntimeFailure as exc:
        raise ConnectError("unavailable", str(exc)) from None


def _unary(handler: Callable[[Request, Message], Awaitable[Message]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        async def call() -> Message:
            return await handler(request, await connect.read_unary(request))

        return await connect.unary(call)

    return endpoint


def _path(fs: E2bFiles, value: Any, what: str = "path") -> str:
    if not isinstance(value, str) or not value:
        raise ConnectError("invalid_argument", f"{what} is required")
    try:
        return fs.path(value)
    except FileError as exc:
        raise ConnectError("invalid_argument", str(exc)) from None


async def stat(request: Request, msg: Message) -> Message:
    _, fs = await _fs(request)
    return {"entry": await _run(fs.entry(_path(fs, msg.get("path"))))}


async def list_dir(request: Request, msg: Message) -> Message:
    _, fs = await _fs(request)
    path = _path(fs, msg.get("path"))
    entry = await _run(fs.entry(path))
    if entry["type"] != "FILE_TYPE_DIRECTORY":
        raise ConnectError("invalid_argument", f"{path} is not a directory")
    if entry.get("isSymlink"):
        path = entry["symlinkTarget"]
    depth = int(msg.get("depth") or 1)
    return {"entries": await _run(fs.list_dir(path, depth))}


async def make_dir(request: Request, msg: Message) -> Message:
    _, fs = await _fs(request)
    path = _path(fs, msg.get("path"))
    if not await _run(fs.make_dir(path)):
        raise ConnectError("already_exists", f"directory {path} already exists")
    return {"entry": await _run(fs.entry(path))}


async def move(request: Request, msg: Message) -> Message:
    _, fs = await _fs(request)
    src, dst = _path(fs, msg.get("source"), "source"), _path(fs, msg.get("destination"), "destination")
    await _run(fs.entry(src))
    await _run(fs.move(src, dst))
    return {"entry": await _run(fs.entry(dst))}


async def remove(request: Request, msg: Message) -> Message:
    _, fs = await _fs(request)
    await _run(fs.remove_all(_path(fs, msg.get("path"))))
    return {}


async def _watch(request: Request, msg: Message) -> tuple[Target, Watch]:
    t, fs = await _fs(request)
    if t.st.watchers.count(t.sandbox_id) >= MAX_WATCHES:
        raise ConnectError("resource_exhausted", f"at most {MAX_WATCHES} watches per sandbox")
    path = _path(fs, msg.get("path"))
    entry = await _run(fs.entry(path))
    if entry["type"] != "FILE_TYPE_DIRECTORY":
        raise ConnectError("invalid_argument", f"path {path} not a directory")
    if entry.get("isSymlink"):
        path = entry["symlinkTarget"]
    watch = Watch(t.sandbox_id, fs, path, bool(msg.get("recursive")),
                  bool(msg.get("includeEntry") or msg.get("include_entry")))  # fmt: skip
    await _run(watch.start())
    return t, watch


async def watch_dir(request: Request) -> Response:
    return await connect.streaming(lambda: _watch_stream(request))


async def _watch_stream(request: Request) -> Response:
    t, watch = await _watch(request, await connect.read_first(request))
    streams = t.st.watchers.streams
    streams[t.sandbox_id] = streams.get(t.sandbox_id, 0) + 1

    async def events() -> AsyncIterator[Message]:
        async for event in _while_running(t, watch):
            yield {"filesystem": event}

    async def closed() -> None:
        left = streams.get(t.sandbox_id, 1) - 1
        if left > 0:
            streams[t.sandbox_id] = left
        else:
            streams.pop(t.sandbox_id, None)

    return connect.stream({"start": {}}, events(), keepalive={"keepalive": {}},
                          interval=connect.keepalive_s(request), on_close=closed)  # fmt: skip


async def _while_running(t: Target, watch: Watch) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in watch.events():
            yield event
    except (FileError, RuntimeFailure):
        raise ConnectError("unavailable", f"The sandbox {t.sandbox_id} was not found (it stopped)") from None


async def create_watcher(request: Request, msg: Message) -> Message:
    t, watch = await _watch(request, msg)
    return {"watcherId": t.st.watchers.add(watch)}


async def get_watcher_events(request: Request, msg: Message) -> Message:
    t, _ = await _fs(request)
    w = t.st.watchers.get(t.sandbox_id, str(msg.get("watcherId") or msg.get("watcher_id") or ""))
    if w is None:
        raise ConnectError("not_found", "watcher not found")
    events, w.pending = w.pending, []
    return {"events": events}


async def remove_watcher(request: Request, msg: Message) -> Message:
    t, _ = await _fs(request)
    watcher_id = str(msg.get("watcherId") or msg.get("watcher_id") or "")
    if t.st.watchers.get(t.sandbox_id, watcher_id) is None:
        raise ConnectError("not_found", "watcher not found")
    t.st.watchers.remove(watcher_id)
    return {}


METHODS: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "Stat": _unary(stat),
    "ListDir": _unary(list_dir),
    "MakeDir": _unary(make_dir),
    "Move": _unary(move),
    "Remove": _unary(remove),
    "WatchDir": watch_dir,
    "CreateWatcher": _unary(create_watcher),
    "GetWatcherEvents": _unary(get_watcher_events),
    "RemoveWatcher": _unary(remove_watcher),
}
