"""How a response becomes a result: the shared parsers and the server-error test.

The endpoint modules pick a parser per :class:`~.call.Call`; the clients ask
:func:`is_server_error` whether an error answer is cloche's own envelope or an agent's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import TypeAdapter


def parse_json(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = TypeAdapter(model)

    def parse(response: httpx.Response) -> Any:
        return adapter.validate_json(response.content)

    return parse


def parse_items(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = TypeAdapter(list[model])

    def parse(response: httpx.Response) -> Any:
        return adapter.validate_python(response.json()["items"])

    return parse


def parse_none(response: httpx.Response) -> None:
    return None


def parse_raw(response: httpx.Response) -> bytes:
    return response.content


def is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def is_server_error(response: httpx.Response) -> bool:
    """Whether a (read) error response is cloche's own rather than an agent's answer.

    The server's errors are exactly ``{"error": {"code": str, "message": str}}``; an
    agent that answers with that very shape is treated as a server error too.
    """
    if response.status_code < 400 or not is_json(response):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    err = body["error"]
    return set(err) == {"code", "message"} and all(isinstance(v, str) for v in err.values())


def may_be_server_error(response: httpx.Response) -> bool:
    """Cheap pre-check on headers only: could this (unread) response be a server error?"""
    if response.status_code < 400 or not is_json(response):
        return False
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= 65536
