"""Host side of the in-sandbox supervisor: exec over a unix socket, no `runc exec`.

Every request opens one connection to the sandbox's socket. A buffered `run` collects
the output in a bare asyncio Protocol, which parses frames as they arrive and resolves
once the exit frame is in: no stream objects and no await per frame, which halves the
host's CPU per exec. An `ExecSession` streams events and accepts stdin, signals and
resizes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloche.node.errors import InvalidState, RuntimeFailure
from cloche.node.protocol import HEADER, MAX_FRAME, ExecRequest, chunks, frame
from cloche.node.unixsock import connect_nofollow

U32 = struct.Struct(">I")  # a started pid, a signal, an errno
EXIT = struct.Struct(">iiBB")  # exit code, signal, truncated, timed out
GONE = "sandbox supervisor went away (sandbox killed or stopped meanwhile?)"


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
                    self.pid = U32.unpack(payload)[0]
                    yield ExecEvent("start", pid=self.pid)
                elif kind == b"O":
                    yield ExecEvent("stdout", payload)
                elif kind == b"E":
                    yield ExecEvent("stderr", payload)
                elif kind == b"X":
                    code, sig, trunc, tout = EXIT.unpack(payload)
                    yield ExecEvent("exit", exit_code=code, signal=sig, truncated=bool(trunc),
                                    timed_out=bool(tout))  # fmt: skip
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise InvalidState(GONE) from exc

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def write_stdin(self, data: bytes) -> None:
        await self._send(chunks(b"I", data))

    async def close_stdin(self) -> None:
        await self._send(frame(b"C"))

    async def signal(self, signo: int) -> None:
        await self._send(frame(b"S", U32.pack(signo)))

    async def resize(self, rows: int, cols: int) -> None:
        await self._send(frame(b"W", struct.pack(">HH", rows, cols)))

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass


def _socket(sock_path: str) -> socket.socket:
    try:
        # never by path: under gVisor the socket lies in a directory the sandbox's root writes
        return connect_nofollow(sock_path)
    except OSError as exc:
        raise RuntimeFailure(f"sandbox supervisor is not reachable ({exc.strerror or exc})") from exc


async def _connect(sock_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(sock=_socket(sock_path), limit=MAX_FRAME + HEADER.size)


def _request_frames(request: ExecRequest) -> bytes:
    """The exec request, then its stdin (closed unless the caller streams more)."""
    if request.stdin is None:
        return request.encode()
    tail = b"" if request.interactive else frame(b"C")
    return request.encode() + chunks(b"I", request.stdin) + tail


async def open_session(sock_path: str, request: ExecRequest) -> ExecSession:
    reader, writer = await _connect(sock_path)
    try:
        writer.write(_request_frames(request))
        await writer.drain()
    except OSError as exc:
        writer.close()
        raise InvalidState(GONE) from exc
    return ExecSession(reader, writer)


class _Collector(asyncio.Protocol):
    """A buffered run's end of the connection: output frames are gathered as they arrive,
    and `result` is set by the exit frame (or fails when the connection ends first)."""

    def __init__(self, result: asyncio.Future[ExecResult], started: float) -> None:
        self.result = result
        self._started = started
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= HEADER.size and not self.result.done():
            kind, length = HEADER.unpack_from(buf)
            end = HEADER.size + length
            if length > MAX_FRAME:
                self.result.set_exception(RuntimeFailure("supervisor sent an oversized frame"))
            elif len(buf) < end:
                return
            elif kind == b"O":
                self._out.append(bytes(buf[HEADER.size : end]))
            elif kind == b"E":
                self._err.append(bytes(buf[HEADER.size : end]))
            elif kind == b"X":
                self._exited(*EXIT.unpack_from(buf, HEADER.size))
            del buf[:end]

    def _exited(self, code: int, sig: int, truncated: int, timed_out: int) -> None:
        ms = (time.perf_counter() - self._started) * 1000
        out, err = b"".join(self._out), b"".join(self._err)
        self.result.set_result(ExecResult(code, sig, out, err, bool(truncated), bool(timed_out), ms))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.result.done():
            self.result.set_exception(InvalidState(GONE))


async def run(sock_path: str, request: ExecRequest) -> ExecResult:
    """Run a command to completion and collect its output (capped by output_cap)."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    result: asyncio.Future[ExecResult] = loop.create_future()
    transport, _ = await loop.create_unix_connection(lambda: _Collector(result, started), sock=_socket(sock_path))
    try:
        transport.write(_request_frames(request))
        return await result
    finally:
        transport.close()


async def kill_process(sock_path: str, pid: int, signo: int) -> int:
    """Signal a process group started earlier (a background command). Returns errno."""
    reader, writer = await _connect(sock_path)
    try:
        writer.write(frame(b"K", struct.pack(">II", pid, signo)))
        await writer.drain()
        header = await reader.readexactly(HEADER.size)
        _, length = HEADER.unpack(header)
        return U32.unpack(await reader.readexactly(length))[0]
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
