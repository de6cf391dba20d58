"""The HTTP transport to an agent's server on `agent.sock`, connecting without
following symlinks (see cloche.node.unixsock): the sandbox's root owns the directory
the socket is in, and a link planted there must never lead the host to another
sandbox's socket, another tenant's agent among them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import httpcore
import httpx

from cloche.node.unixsock import pinned


class NoFollowUnixBackend(httpcore.AnyIOBackend):
    """httpcore's backend, with every unix-socket connect pinned to the socket inode."""

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        with pinned(path) as target:
            return await super().connect_unix_socket(target, timeout, socket_options)


def agent_transport(sock: Path) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(uds=str(sock))
    # httpx takes no network backend; its pool is rebuilt with the same settings and ours
    transport._pool = httpcore.AsyncConnectionPool(uds=str(sock), network_backend=NoFollowUnixBackend())
    return transport
