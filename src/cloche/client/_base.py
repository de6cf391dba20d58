"""Configuration, request building and response handling shared by both clients.

:class:`BaseClient` owns everything that does not depend on whether I/O is blocking or
async: resolving the URL and API key, default headers, per-call timeouts, building an
:class:`httpx.Request` from an :class:`~cloche.client._api.Call`, and turning a response
into a result or a typed :class:`~cloche.client.errors.ClocheError`.  ``Client`` and
``AsyncClient`` only add the sending.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

import httpx
from pydantic import ValidationError

from ..constants import VERSION
from ._api import DEFAULT, Call, is_server_error, may_be_server_error, pty_url
from .errors import ClocheError, from_transport_error, raise_for_response
from .models import NetworkStatus, SandboxInfo

T = TypeVar("T")

ENV_URL = "CLOCHE_URL"
"""Environment variable holding the server URL."""
ENV_API_KEY = "CLOCHE_API_KEY"
"""Environment variable holding the API key."""
DEFAULT_URL = "http://127.0.0.1:8787"
"""Server URL used when neither an argument nor ``CLOCHE_URL`` gives one."""
DEFAULT_TIMEOUT = 60.0
"""Default seconds to wait to connect and for a response."""
CHUNK_SIZE = 256 * 1024
"""Bytes per chunk when streaming bodies."""

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just transferred (a delta, like ``Progress.advance``)."""


def resolve_url(url: str | None) -> str:
    """The server URL: the argument, else ``$CLOCHE_URL``, else :data:`DEFAULT_URL`."""
    return (url or os.environ.get(ENV_URL) or DEFAULT_URL).rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """The API key: the argument, else ``$CLOCHE_API_KEY``, else ``None``."""
    return api_key if api_key else (os.environ.get(ENV_API_KEY) or None)


def body_length(body: bytes | IO[bytes]) -> int | None:
    """Bytes left to send from ``body``, or ``None`` if unknown (a pipe, a socket...)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    try:
        if not body.seekable():
            return None
        pos = body.tell()
        end = body.seek(0, io.SEEK_END)
        body.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def memory_chunks(body: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """An in-memory body in :data:`CHUNK_SIZE` pieces (so progress can be reported)."""
    view = memoryview(body)
    for i in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[i : i + CHUNK_SIZE])


def read_chunk(body: IO[bytes]) -> bytes:
    """Read up to :data:`CHUNK_SIZE` bytes, insisting the file object is binary."""
    chunk = body.read(CHUNK_SIZE)
    if isinstance(chunk, str):
        raise TypeError("file objects must be opened in binary mode ('rb')")
    return chunk


class BaseClient:
    """State and logic common to :class:`~cloche.Client` and :class:`~cloche.AsyncClient`.

    Args:
        url: Server URL; defaults to ``$CLOCHE_URL`` or ``http://127.0.0.1:8787``.
        api_key: API key (tenant or admin); defaults to ``$CLOCHE_API_KEY``.
        timeout: Seconds to wait when connecting and for ordinary responses.  Long
            operations (exec, transfers, sandbox creation) extend the read timeout.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url: str = resolve_url(url)
        self.api_key: str | None = resolve_api_key(api_key)
        self.timeout: float = timeout
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {self.url!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    # -- request building --------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header for the configured key (empty without a key)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _default_headers(self) -> dict[str, str]:
        return {"User-Agent": f"cloche-python/{VERSION}", **self.auth_headers()}

    def _timeout_for(self, call: Call[Any]) -> httpx.Timeout:
        if call.read_timeout is DEFAULT:
            return httpx.Timeout(self.timeout)
        read = call.read_timeout
        if read is not None:
            read = max(float(read), self.timeout)  # type: ignore[arg-type]
        return httpx.Timeout(self.timeout, read=read, write=None if read is None else read)

    def _request_args(self, call: Call[Any], content: Any = None) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.build_request`` (same for async)."""
        headers = dict(call.headers)
        if call.content is not None:
            if call.content_type:
                headers["Content-Type"] = call.content_type
            length = body_length(call.content)
            if length is not None:
                # With an explicit length httpx sends the stream without chunked encoding,
                # so the server can reject an oversized upload before reading it.
                headers["Content-Length"] = str(length)
        args: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "headers": headers,
            "timeout": self._timeout_for(call),
        }
        if call.params:
            args["params"] = dict(call.params)
        if call.json is not None:
            args["json"] = call.json
        if content is not None:
            args["content"] = content
        return args

    def _pty_args(self, sandbox_id: str, cmd: str | None, rows: int, cols: int, cwd: str | None) -> dict[str, Any]:
        """Keyword arguments for websockets' ``connect`` (sync or asyncio) to a PTY."""
        return {
            "uri": pty_url(self.url, sandbox_id, cmd=cmd, rows=rows, cols=cols, cwd=cwd),
            "additional_headers": self.auth_headers(),
            "open_timeout": self.timeout,
            "max_size": None,
            "compression": None,
            "proxy": None,
        }

    # -- response handling -------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> ClocheError:
        return from_transport_error(exc, self.url)

    @staticmethod
    def _is_error(call: Call[Any], response: httpx.Response) -> bool:
        """From the headers alone: must the body be read to raise an error?

        A passthrough call (an agent's answer) only raises for the server's own errors.
        """
        if response.status_code < 400:
            return False
        return not call.passthrough or may_be_server_error(response)

    @staticmethod
    def _check_status(call: Call[Any], response: httpx.Response) -> None:
        """Raise the typed error for an error response (its body must be read)."""
        if call.passthrough and not is_server_error(response):
            return
        raise_for_response(response)

    @staticmethod
    def _parse(call: Call[T], response: httpx.Response) -> T:
        """Run ``call.parse``; a response of the wrong shape becomes a ClocheError."""
        try:
            return call.parse(response)
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise ClocheError(
                response.status_code,
                "invalid_response",
                f"unexpected response to {call.method} {call.path}: {exc}",
            ) from exc


class SandboxBase:
    """Fields and helpers common to the sync and async sandbox handles."""

    def __init__(self, info: SandboxInfo) -> None:
        self._info = info

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as last seen from the server (see ``refresh()``)."""
        return self._info

    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._info.id

    @property
    def name(self) -> str | None:
        """The sandbox's name, if it was created with one."""
        return self._info.name

    @property
    def state(self) -> str:
        """The last known state: creating, running, paused, hibernated or stopped."""
        return self._info.state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, state={self.state!r})"

    def _noted(self, status: NetworkStatus) -> NetworkStatus:
        """Keep a fresh network status in :attr:`info` too, and return it."""
        self._info = self._info.model_copy(update={"network": status})
        return status

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SandboxBase) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
