"""Host side of the in-sandbox supervisor: exec over a unix socket, no `runc exec`.

Every request opens one connection to the sandbox's socket. A buffered `run` collects
the output; an `ExecSession` streams events and accepts stdin, signals and resizes.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloche.node.errors import InvalidState, RuntimeFailure
from cloche.node.protocol import HEADER, MAX_FRAME, ExecRequest, chunks, frame
from cloche.node.unixsock import connect_nofollow


@dataclass
class ExecResult:
    exit_code: int
    signal: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool
    duration_ms: float


@dataclass
class ExecEvent:
    """One streamed event: kind is 'start', 'stdout', 'stderr' or 'exit'."""

    kind: str
    data: bytes = b""
    pid: int = 0
    exit_code: int = 0
    signal: int = 0
    truncated: bool = False
    timed_out: bool = False


class ExecSession:
    """A running command: iterate `events()`; send stdin, signals and window sizes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.pid = 0

    async def _read_frame(self) -> tuple[bytes, bytes]:
        header = await self._reader.readexactly(HEADER.size)
        kind, length = HEADER.unpack(header)
        if length > MAX_FRAME:
            raise RuntimeFailure("supervisor sent an oversized frame")
        return kind, await self._reader.readexactly(length)

    async def events(self) -> AsyncIterator[ExecEvent]:
        try:
            while True:
                kind, payload = await self._read_frame()
                if kind == b"S":
                    self.pid = struct.unpack(">I", payload)[0]
                    yield ExecEvent("start", pid=self.pid)
                elif kind == b"O":
                    yield ExecEvent("stdout", payload)
                elif kind == b"E":
                    yield ExecEvent("stderr", payload)
                elif kind == b"X":
                    code, sig, trunc, tout = struct.unpack(">iiBB", payload)
                    yield ExecEvent("exit", exit_code=code, signal=sig, truncated=bool(trunc),
                                    timed_out=bool(tout))  # fmt: skip
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise InvalidState("sandbox supervisor went away (sandbox killed or stopped meanwhile?)") from exc

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def write_stdin(self, data: bytes) -> None:
        await self._send(chunks(b"I", data))

    async def close_stdin(self) -> None:
        await self._send(frame(b"C"))

    async def signal(self, signo: int) -> None:
        await self._send(frame(b"S", struct.pack(">I", signo)))

    async def resize(self, rows: int, cols: int) -> None:
        await self._send(frame(b"W", struct.pack(">HH", rows, cols)))

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass


async def _connect(sock_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        # never by path: under gVisor the socket lies in a directory the sandbox's root writes
        return await asyncio.open_unix_connection(sock=connect_nofollow(sock_path), limit=MAX_FRAME + HEADER.size)
    except OSError as exc:
        raise RuntimeFailure(f"sandbox supervisor is not reachable ({exc.strerror or exc})") from exc


async def open_session(sock_path: str, request: ExecRequest) -> ExecSession:
    reader, writer = await _connect(sock_path)
    try:
        writer.write(request.encode())
        if request.stdin is not None:
            writer.write(chunks(b"I", request.stdin))
            if not request.interactive:
                writer.write(frame(b"C"))
        await writer.drain()
    except OSError as exc:
        writer.close()
        raise InvalidState("sandbox supervisor went away (sandbox killed or stopped meanwhile?)") from exc
    return ExecSession(reader, writer)


async def run(sock_path: str, request: ExecRequest) -> ExecResult:
    """Run a command to completion and collect its output (capped by output_cap)."""
    started = time.perf_counter()
    session = await open_session(sock_path, request)
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        async for event in session.events():
            if event.kind == "stdout":
                out.append(event.data)
            elif event.kind == "stderr":
                err.append(event.data)
            elif event.kind == "exit":
                return ExecResult(
                    exit_code=event.exit_code,
                    signal=event.signal,
                    stdout=b"".join(out),
                    stderr=b"".join(err),
                    truncated=event.truncated,
                    timed_out=event.timed_out,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
    finally:
        await session.close()
    raise RuntimeFailure("sandbox supervisor closed the stream without an exit status")


async def kill_process(sock_path: str, pid: int, signo: int) -> int:
    """Signal a process group started earlier (a background command). Returns errno."""
    reader, writer = await _connect(sock_path)
    try:
        writer.write(frame(b"K", struct.pack(">II", pid, signo)))
        await writer.drain()
        header = await reader.readexactly(HEADER.size)
        _, length = HEADER.unpack(header)
        return struct.unpack(">I", await reader.readexactly(length))[0]
    finally:
        writer.close()


async def ping(sock_path: str, timeout: float = 5.0) -> None:
    reader, writer = await _connect(sock_path)
    try:
        writer.write(frame(b"P"))
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(HEADER.size), timeout)
    finally:
        writer.close()
