"""The HTTP transport to an agent's server on its `agent.sock`, over a byte stream the
node hands out (`Node.connect_host`), so it works the same whether the node runs in
this process or on another machine. The node connects without following symlinks:
the sandbox's root owns the directory the socket is in, and a link planted there must
never lead the host to another sandbox's socket, another tenant's agent among them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from cloche.tlsdefault import default_tls

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Stream(httpcore.AsyncNetworkStream):
    """asyncio streams as httpcore's network stream (OS errors as httpcore's, which
    httpx turns into its HTTPError)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def get_extra_info(self, info: str) -> Any:
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    """Every connection of the pool is a new stream from `connect`."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("an agent is reached only through its node")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        try:
            return _Stream(*await asyncio.wait_for(self._connect(), timeout))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def agent_transport(connect: Connect) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(uds="agent.sock", verify=default_tls())  # never used: plain HTTP
    # httpx takes no network backend; its pool is rebuilt with the same settings and ours
    transport._pool = httpcore.AsyncConnectionPool(uds="agent.sock", network_backend=_Backend(connect))
    return transport
