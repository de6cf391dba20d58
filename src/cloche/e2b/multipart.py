"""A small multipart/form-data reader over a spooled request body (no dependency, no
copy of the file data in memory: parts are returned as offsets into the spool)."""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from typing import IO

_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MultipartError(ValueError):
    pass


@dataclass
class Part:
    name: str | None
    filename: str | None
    start: int
    end: int


def boundary_of(content_type: str) -> str:
    for key, value in _PARAM.findall(";" + content_type.partition(";")[2]):
        if key.lower() == "boundary":
            return value.strip('"')
    raise MultipartError("multipart body without a boundary")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value.replace("%22", '"')


def _disposition(headers: bytes) -> tuple[str | None, str | None]:
    name = filename = None
    for line in headers.decode("utf-8", errors="replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for pkey, pvalue in _PARAM.findall(value.partition(";")[1] + value.partition(";")[2]):
            if pkey.lower() == "name":
                name = _unquote(pvalue)
            elif pkey.lower() == "filename":
                filename = _unquote(pvalue)
    return name, filename


def parse(spool: IO[bytes], boundary: str) -> list[Part]:
    """The parts of the body in `spool`, as offsets into it."""
    spool.seek(0, 2)
    if spool.tell() == 0:
        return []
    with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parts(data, b"--" + boundary.encode())


def _parts(data: mmap.mmap, delimiter: bytes) -> list[Part]:
    pos = data.find(delimiter)
    if pos < 0:
        raise MultipartError("no multipart boundary in the body")
    parts: list[Part] = []
    pos += len(delimiter)
    while True:
        if data[pos : pos + 2] == b"--":
            break
        if data[pos : pos + 2] != b"\r\n":
            raise MultipartError("malformed multipart boundary line")
        head_end = data.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise MultipartError("multipart part without a header end")
        name, filename = _disposition(data[pos + 2 : head_end])
        body_start = head_end + 4
        nxt = data.find(b"\r\n" + delimiter, body_start)
        if nxt < 0:
            raise MultipartError("multipart body is truncated")
        parts.append(Part(name, filename, body_start, nxt))
        pos = nxt + 2 + len(delimiter)
    return parts
