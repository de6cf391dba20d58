"""The client's side of the node API's streams: a sandbox's files over chunked HTTP,
an interactive exec over a WebSocket, and a port or host socket of the sandbox as a
real asyncio stream pair (a local socketpair bridged to the WebSocket), so callers of
`RemoteNode` use what `NodeRuntime` hands them, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cloche.node.api import CHUNK
from cloche.node.archive import UploadReport
from cloche.node.errors import FileError, RuntimeFailure
from cloche.node.file_meta import FileInfo
from cloche.node.files import Entry
from cloche.node.supervisor import ExecEvent
from cloche.node.watch import FsEvent
from cloche.nodeapi import wire
from cloche.nodeapi.http import NodeHttp, Reply
from cloche.nodeapi.tasks import EOF_MESSAGE, HalfClose, race

OpenWs = Callable[[str], Awaitable[ClientConnection]]  # a node WebSocket, opened and accepted


class Answer(Protocol):
    """A node's whole answer, as an httpx response or a `Reply` holds it."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def answer(response: Answer) -> Any:
    """A JSON answer's data, or the node's error raised as the node raised it."""
    if response.headers.get(wire.ERROR_HEADER):
        raise wire.error_from(response.json())
    if response.status_code >= 400:
        raise RuntimeFailure(f"node API answered {response.status_code}: {response.text[:200]}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.content


async def opened(ws: ClientConnection) -> None:
    """Read a stream's first answer: {"ok": true}, or the error that refused it."""
    first = json.loads(await ws.recv())
    if "error" in first:
        raise wire.error_from(first["error"])
    if "oserror" in first:
        raise OSError(first["oserror"], first["message"])


class RemoteFiles:
    """`SandboxFiles` of one sandbox on a remote node."""

    def __init__(self, http: NodeHttp, sandbox_id: str, open_ws: OpenWs) -> None:
        self._http = http
        self._base = f"/v1/sandboxes/{sandbox_id}/files"
        self._open_ws = open_ws

    async def _ask(self, method: str, op: str, params: dict[str, Any], **body: Any) -> Any:
        """One call on the sandbox's files (`json=` or `content=` as the body) and its answer."""
        return answer(await self._http.request(method, f"{self._base}/{op}", params=params, **body))

    async def _stream(self, op: str, path: str, chunk: int) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"path": path, "chunk": chunk}
        async with self._http.stream("GET", f"{self._base}/stream/{op}", params=params) as r:
            if r.status != 200:
                answer(Reply(r.status, r.headers, await r.read()))
            try:
                async for data in r.content.iter_chunked(chunk):
                    yield data
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise FileError(f"the node cut the stream of {path}: {exc}", "io_error") from exc

    def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        return self._stream("read", path, chunk)

    def archive(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        return self._stream("archive", path, chunk)

    async def read_all(self, path: str, limit: int) -> bytes:
        return bytes(await self._ask("GET", "read_all", {"path": path, "limit": limit}))

    async def _query(self, op: str, path: str, **params: Any) -> Any:
        return await self._ask("GET", f"query/{op}", {"path": path, **params})

    async def size(self, path: str) -> int:
        return int(await self._query("size", path))

    async def list(self, path: str) -> list[Entry]:
        return [wire.load(Entry, e) for e in await self._query("list", path)]

    async def stat(self, path: str) -> Entry:
        return wire.load(Entry, await self._query("stat", path))

    async def is_dir(self, path: str) -> bool:
        return bool(await self._query("is_dir", path))

    async def exists(self, path: str) -> bool:
        return bool(await self._query("exists", path))

    async def write(self, path: str, chunks: AsyncIterable[bytes], mode: int = 0o644) -> int:
        return int(await self._ask("PUT", "upload/write", {"path": path, "mode": mode}, content=chunks))

    async def write_as(self, path: str, chunks: AsyncIterable[bytes], uid: int, gid: int, mode: int = 0o644) -> int:
        params = {"path": path, "uid": uid, "gid": gid, "mode": mode}
        return int(await self._ask("PUT", "upload/write_as", params, content=chunks))

    async def mkdir_as(self, path: str, uid: int, gid: int, mode: int = 0o755) -> None:
        await self._change("mkdir_as", path, uid=uid, gid=gid, mode=mode)

    async def info(self, path: str) -> FileInfo:
        return wire.load(FileInfo, await self._query("info", path))

    async def walk(self, path: str, depth: int) -> list[FileInfo]:
        return [wire.load(FileInfo, i) for i in await self._query("walk", path, depth=depth)]

    async def set_metadata(self, path: str, metadata: dict[str, str]) -> None:
        await self._ask("POST", "change/set_metadata", {"path": path}, json=metadata)

    async def watch(self, path: str, recursive: bool) -> AsyncIterator[FsEvent]:
        ws = await self._open_ws(f"{self._base}/watch?{urlencode({'path': path, 'recursive': int(recursive)})}")
        return self._changes(ws)

    @staticmethod
    async def _changes(ws: ClientConnection) -> AsyncIterator[FsEvent]:
        try:
            async for msg in ws:
                data = json.loads(msg)
                if "error" in data:
                    raise wire.error_from(data["error"])
                yield wire.load(FsEvent, data["event"])
        finally:
            await ws.close()

    async def extract(self, path: str, tarball: AsyncIterable[bytes]) -> UploadReport:
        return wire.load(UploadReport, await self._ask("PUT", "upload/extract", {"path": path}, content=tarball))

    async def _change(self, op: str, path: str, **params: Any) -> None:
        await self._ask("POST", f"change/{op}", {"path": path, **params})

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        await self._change("mkdir", path, mode=mode)

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self._change("remove", path, recursive="1" if recursive else "0")

    async def rename(self, src: str, dst: str) -> None:
        await self._change("rename", src, dst=dst)

    async def symlink(self, path: str, target: str) -> None:
        await self._change("symlink", path, target=target)

    async def hardlink(self, path: str, existing: str) -> None:
        await self._change("hardlink", path, existing=existing)


class RemoteExecStream:
    """`ExecStream` of a command running on a remote node."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.pid = 0

    async def events(self) -> AsyncIterator[ExecEvent]:
        exited = False
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    yield ExecEvent("stdout" if msg[:1] == b"O" else "stderr", msg[1:])
                    continue
                data = json.loads(msg)
                if "error" in data:
                    raise wire.error_from(data["error"])
                event = wire.load(ExecEvent, data["event"])
                if event.kind == "start":
                    self.pid = event.pid
                exited |= event.kind == "exit"
                yield event
        except ConnectionClosed:
            pass
        if not exited:
            raise RuntimeFailure("the node closed the exec stream before the command exited")

    async def _op(self, op: str, **args: Any) -> None:
        try:
            await self._ws.send(json.dumps({"op": op, **args}))
        except ConnectionClosed as exc:
            raise RuntimeFailure("the exec stream is closed") from exc

    async def write_stdin(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise RuntimeFailure("the exec stream is closed") from exc

    async def close_stdin(self) -> None:
        await self._op("close_stdin")

    async def signal(self, signo: int) -> None:
        await self._op("signal", signo=signo)

    async def resize(self, rows: int, cols: int) -> None:
        await self._op("resize", rows=rows, cols=cols)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(json.dumps({"op": "close"}))
        await self._ws.close()


Bridged = tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]


async def bridge(ws: ClientConnection, limit: int) -> Bridged:
    """A stream pair whose bytes go through `ws` (opened), and the task moving them."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours, limit=limit)
    near_reader, near_writer = await asyncio.open_connection(sock=theirs)

    half = HalfClose()

    async def out() -> None:
        while data := await near_reader.read(CHUNK):
            await ws.send(data)
        await ws.send(EOF_MESSAGE)
        await half.sent()

    async def back() -> None:
        async for msg in ws:
            if isinstance(msg, bytes):
                near_writer.write(msg)
                await near_writer.drain()
            else:
                near_writer.write_eof()
                await half.got()
                return

    async def run() -> None:
        try:
            await race(out(), back())
        except (OSError, ConnectionClosed):
            pass  # either end went away: both close
        finally:
            near_writer.close()
            await ws.close()

    return reader, writer, asyncio.create_task(run())
