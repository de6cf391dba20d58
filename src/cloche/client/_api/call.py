"""What one API request is: the :class:`Call`, its timeouts and how its path is spelled.

Every endpoint module of this package returns ``Call`` objects; the sync and async
clients execute the very same ones, so this is the single shape both faces agree on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")

Body = bytes | IO[bytes]
"""A request body: bytes in memory or a binary file object to stream."""


class _Default:
    """Sentinel type: use the client's configured timeout."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
TRANSFER_TIMEOUT = 600.0
"""Read timeout for bulk transfers (files, archives): the server may work a while."""
CREATE_TIMEOUT = 180.0
"""Read timeout for creating a sandbox: a cold start without a warm pool takes seconds."""
INVOKE_TIMEOUT = 600.0
"""Default read timeout of an agent invocation: it may create, wake and start the agent."""
LONG_POLL_S = 20.0
"""The longest single log long poll the server accepts; longer waits poll again."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request plus the parser for its successful response.

    Attributes:
        method: HTTP method.
        path: URL path below the base URL, already percent-encoded.
        params: Query parameters.
        json: JSON body (mutually exclusive with ``content``).
        content: Raw body, bytes or a binary file object.
        content_type: ``Content-Type`` for ``content``.
        read_timeout: Seconds to wait for the response, ``None`` to wait forever, or
            :data:`DEFAULT` for the client's timeout.  Never below the client's timeout.
        precheck: Validates the response headers before the body is read (so e.g. a
            directory listing of a large file does not download it).
        parse: Turns the successful, fully read response into the result.
        headers: Extra request headers.
        passthrough: Hand any status to ``parse`` (an agent's own answer), raising only
            for the server's own error envelope (see :func:`is_server_error`).
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    content: Body | None = None
    content_type: str | None = None
    read_timeout: float | None | _Default = DEFAULT
    precheck: Callable[[httpx.Response], None] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    passthrough: bool = False


def seg(value: str) -> str:
    """One percent-encoded path segment."""
    return quote(value, safe="")


def sbx(sandbox_id: str, *rest: str) -> str:
    """Path of a sandbox (sub)resource, with the id percent-encoded."""
    return "/".join([f"/v1/sandboxes/{quote(sandbox_id, safe='')}", *rest]).rstrip("/")
