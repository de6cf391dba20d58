"""The in-process `SandboxFiles`: node/files.SandboxFS run in worker threads, as streams.

Why it exists: the control plane reads and writes a sandbox's files through the
streaming interface of node/api.py, which a remote node serves over the network just
the same. Here each blocking call runs in a thread (the event loop never waits on a
disk), and file bodies move in chunks so no file is ever whole in memory.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import TypeVar

from cloche.node import archive, file_meta, watch
from cloche.node.api import CHUNK
from cloche.node.archive import UploadReport
from cloche.node.errors import FileError
from cloche.node.file_meta import FileInfo
from cloche.node.files import Entry, SandboxFS
from cloche.node.watch import FsEvent

T = TypeVar("T")


class LocalFiles:
    """A running sandbox's files, on this host; `running()` tells a watch whether the
    sandbox still runs."""

    def __init__(self, fs: SandboxFS, running: Callable[[], bool]) -> None:
        self._fs = fs
        self._running = running

    def _as(self, uid: int, gid: int) -> SandboxFS:
        """The same root, creating files as `uid`:`gid` inside the sandbox."""
        return SandboxFS(self._fs.root, self._fs.owner + uid, self._fs.owner + gid)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    async def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        fd = await self._run(self._fs.open_read, path)
        try:
            while data := await self._run(os.read, fd, chunk):
                yield data
        finally:
            os.close(fd)

    async def read_all(self, path: str, limit: int) -> bytes:
        return await self._run(self._fs.read, path, limit)

    async def size(self, path: str) -> int:
        fd = await self._run(self._fs.open_read, path)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    async def write(self, path: str, chunks: AsyncIterable[bytes], mode: int = 0o644) -> int:
        return await _write(self._fs, path, chunks, mode)

    async def write_as(self, path: str, chunks: AsyncIterable[bytes], uid: int, gid: int, mode: int = 0o644) -> int:
        return await _write(self._as(uid, gid), path, chunks, mode)

    async def mkdir_as(self, path: str, uid: int, gid: int, mode: int = 0o755) -> None:
        await self._run(self._as(uid, gid).mkdir, path, mode)

    async def info(self, path: str) -> FileInfo:
        return await self._run(file_meta.info, self._fs, path)

    async def walk(self, path: str, depth: int) -> list[FileInfo]:
        return await self._run(file_meta.walk, self._fs, path, depth)

    async def set_metadata(self, path: str, metadata: dict[str, str]) -> None:
        await self._run(file_meta.set_metadata, self._fs, path, metadata)

    async def watch(self, path: str, recursive: bool) -> AsyncIterator[FsEvent]:
        return await watch.watch(self._fs, path, recursive, self._running)

    async def list(self, path: str) -> list[Entry]:
        return await self._run(self._fs.list, path)

    async def stat(self, path: str) -> Entry:
        return await self._run(self._fs.stat, path)

    async def is_dir(self, path: str) -> bool:
        return await self._run(self._fs.is_dir, path)

    async def exists(self, path: str) -> bool:
        try:
            await self._run(self._fs.stat, path)
        except FileError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        await self._run(self._fs.mkdir, path, mode)

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self._run(self._fs.remove, path, recursive)

    async def rename(self, src: str, dst: str) -> None:
        await self._run(self._fs.rename, src, dst)

    async def symlink(self, path: str, target: str) -> None:
        await self._run(self._fs.symlink, path, target)

    async def hardlink(self, path: str, existing: str) -> None:
        await self._run(self._fs.hardlink, path, existing)

    async def extract(self, path: str, tarball: AsyncIterable[bytes]) -> UploadReport:
        """The tar is spooled to a temporary file as it arrives (tarfile reads it back
        and forth), then extracted member by member through the path-safe SandboxFS."""
        with tempfile.TemporaryFile() as spool:
            async for data in tarball:
                await self._run(spool.write, data)
            spool.seek(0)
            return await self._run(archive.upload, self._fs, path, spool)

    async def archive(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        out = await self._run(archive.download, self._fs, path)
        try:
            while data := await self._run(out.read, chunk):
                yield data
        finally:
            out.close()


async def _write(fs: SandboxFS, path: str, chunks: AsyncIterable[bytes], mode: int) -> int:
    """The writer thread takes chunks from a small queue as the caller's stream yields
    them: a few chunks at most are in memory, and the rename happens once all came.
    A stream that fails leaves the old file (the thread removes its temp file)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)

    def pull() -> Iterator[bytes]:
        while (item := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()) is not None:
            if not item:
                raise OSError(errno.ECANCELED, "the upload stream failed")
            yield item

    writer = asyncio.ensure_future(asyncio.to_thread(fs.write_chunks, path, pull(), mode))
    try:
        async for data in chunks:
            if writer.done():
                break
            if data:
                await _put(queue, data, writer)
    except BaseException:
        await _put(queue, b"", writer)
        await asyncio.gather(writer, return_exceptions=True)
        raise
    await _put(queue, None, writer)
    return await writer


async def _put(queue: asyncio.Queue[bytes | None], item: bytes | None, writer: asyncio.Future[int]) -> None:
    """Hand the writer thread a chunk (b"": abort, None: the end), unless it has
    already finished (failed)."""
    while not writer.done():
        try:
            await asyncio.wait_for(queue.put(item), 0.1)
            return
        except TimeoutError:
            continue
