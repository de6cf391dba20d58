"""Watching a directory in a sandbox, as a stream of plain change events.

Why it exists: watching is host-side work (the node reads the sandbox's root), and the
caller may be a control plane on another machine, so a watch is an async stream of
`FsEvent`s. The node polls the directory (and, recursively, below it) through the
path-safe file layer and diffs snapshots: new names are `create`, vanished ones
`remove`, a changed size or mtime `write`, a changed mode `chmod`. Polling works for
every template and survives the sandbox's own mounts; events arrive within POLL_S.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from cloche.node.errors import FileError
from cloche.node.file_meta import MAX_WALK, kind_of
from cloche.node.files import SandboxFS

POLL_S = 0.2
Snapshot = dict[str, tuple[str, int, int, int]]  # relative name -> (kind, size, mtime_ns, st_mode)


@dataclass(frozen=True)
class FsEvent:
    name: str  # relative to the watched directory
    kind: str  # create, remove, write, chmod


def diff(before: Snapshot, after: Snapshot) -> list[FsEvent]:
    events = []
    for name, info in after.items():
        old = before.get(name)
        if old is None:
            events.append(FsEvent(name, "create"))
        elif old[0] != info[0]:
            events += [FsEvent(name, "remove"), FsEvent(name, "create")]
        elif old[1:3] != info[1:3] and info[0] != "dir":
            events.append(FsEvent(name, "write"))
        elif old[3] != info[3]:
            events.append(FsEvent(name, "chmod"))
    events += [FsEvent(name, "remove") for name in before if name not in after]
    return events


def scan(fs: SandboxFS, path: str, recursive: bool) -> Snapshot:
    out: Snapshot = {}
    _scan(fs, path, "", recursive, out)
    return out


def _scan(fs: SandboxFS, path: str, prefix: str, recursive: bool, out: Snapshot) -> None:
    try:
        fd = fs.open_path(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileError:
        return
    subdirs = []
    try:
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            out[prefix + name] = (kind_of(st.st_mode), st.st_size, st.st_mtime_ns, st.st_mode)
            if len(out) >= MAX_WALK:
                return
            if recursive and stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
    finally:
        os.close(fd)
    for name in subdirs:
        _scan(fs, f"{path.rstrip('/')}/{name}", prefix + name + "/", recursive, out)


async def watch(fs: SandboxFS, path: str, recursive: bool, running: Callable[[], bool]) -> AsyncIterator[FsEvent]:
    """Armed once awaited (the first snapshot is taken): every later change is reported.
    The stream ends with FileError `not_running` once `running()` is false."""
    snapshot = await asyncio.to_thread(_arm, fs, path, recursive)
    return _changes(fs, path, recursive, running, snapshot)


def _arm(fs: SandboxFS, path: str, recursive: bool) -> Snapshot:
    os.close(fs.open_path(path, os.O_RDONLY | os.O_DIRECTORY))  # FileError unless a directory
    return scan(fs, path, recursive)


async def _changes(fs: SandboxFS, path: str, recursive: bool, running: Callable[[], bool],
                   snapshot: Snapshot) -> AsyncIterator[FsEvent]:  # fmt: skip
    while True:
        await asyncio.sleep(POLL_S)
        if not running():
            raise FileError(f"{path}: the sandbox stopped running", "not_running")
        now = await asyncio.to_thread(scan, fs, path, recursive)
        for event in diff(snapshot, now):
            yield event
        snapshot = now
