"""File endpoints of a sandbox: read, list, write, stat, mkdir, remove, rename, tar in and out.

A read and a listing share one URL; a header check before the body is read tells a file
from a directory, so listing a large file never downloads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

import httpx
from pydantic import TypeAdapter

from ..errors import InvalidRequest
from ..models import ArchiveResult, Entry, WriteResult
from .call import TRANSFER_TIMEOUT, Body, Call, sbx
from .responses import is_json, parse_json, parse_none, parse_raw


def _not_a_directory(path: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        if not is_json(response):
            raise InvalidRequest(400, "not_a_directory", f"{path} is not a directory")

    return check


def _not_json_listing(path: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        if is_json(response):
            raise InvalidRequest(400, "is_a_directory", f"{path} is a directory")

    return check


def _entries(response: httpx.Response) -> list[Entry]:
    return TypeAdapter(list[Entry]).validate_python(response.json()["entries"])


def read_file(sandbox_id: str, path: str) -> Call[bytes]:
    """``GET .../files?path=P`` for a regular file: its raw bytes."""
    return Call(
        "GET",
        sbx(sandbox_id, "files"),
        parse_raw,
        params={"path": path},
        precheck=_not_json_listing(path),
        read_timeout=TRANSFER_TIMEOUT,
    )


def list_dir(sandbox_id: str, path: str) -> Call[list[Entry]]:
    """``GET .../files?path=P`` for a directory: its entries."""
    return Call(
        "GET",
        sbx(sandbox_id, "files"),
        _entries,
        params={"path": path},
        precheck=_not_a_directory(path),
    )


def write_file(sandbox_id: str, path: str, data: bytes | str | IO[bytes]) -> Call[WriteResult]:
    """``PUT .../files?path=P`` with the raw content (``str`` is encoded as UTF-8)."""
    content = data.encode() if isinstance(data, str) else data
    return Call(
        "PUT",
        sbx(sandbox_id, "files"),
        parse_json(WriteResult),
        params={"path": path},
        content=content,
        content_type="application/octet-stream",
        read_timeout=TRANSFER_TIMEOUT,
    )


def stat(sandbox_id: str, path: str) -> Call[Entry]:
    """``GET .../files/stat?path=P``."""
    return Call("GET", sbx(sandbox_id, "files", "stat"), parse_json(Entry), params={"path": path})


def mkdir(sandbox_id: str, path: str) -> Call[Entry]:
    """``POST .../files/mkdir``."""
    return Call("POST", sbx(sandbox_id, "files", "mkdir"), parse_json(Entry), json={"path": path})


def remove(sandbox_id: str, path: str, recursive: bool = False) -> Call[None]:
    """``DELETE .../files?path=P&recursive=...``."""
    return Call(
        "DELETE",
        sbx(sandbox_id, "files"),
        parse_none,
        params={"path": path, "recursive": "true" if recursive else "false"},
    )


def rename(sandbox_id: str, src: str, dst: str) -> Call[Entry]:
    """``POST .../files/rename``."""
    return Call("POST", sbx(sandbox_id, "files", "rename"), parse_json(Entry), json={"src": src, "dst": dst})


def upload_tar(sandbox_id: str, path: str, data: Body) -> Call[ArchiveResult]:
    """``PUT .../archive?path=DIR`` with a tar or tar.gz body; extracts into ``DIR``."""
    return Call(
        "PUT",
        sbx(sandbox_id, "archive"),
        parse_json(ArchiveResult),
        params={"path": path},
        content=data,
        content_type="application/x-tar",
        read_timeout=TRANSFER_TIMEOUT,
    )


def download_tar(sandbox_id: str, path: str) -> Call[bytes]:
    """``GET .../archive?path=DIR``: a tar of ``DIR``."""
    return Call(
        "GET",
        sbx(sandbox_id, "archive"),
        parse_raw,
        params={"path": path},
        read_timeout=TRANSFER_TIMEOUT,
    )
