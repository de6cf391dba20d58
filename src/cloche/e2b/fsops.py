"""File operations with E2B's semantics over the node's `SandboxFiles` stream
interface: entries in envd's EntryInfo shape (owner, group, permissions, symlink
targets, metadata), paths relative to the acting user's home, files and directories
created as that user, recursive listings and removals. Everything host-side (stat,
xattrs, ownership) is the node's; this module only translates."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import Any

from cloche.control.errors import status_of
from cloche.e2b.users import User, uid_name
from cloche.node.api import SandboxFiles
from cloche.node.errors import FileError
from cloche.node.file_meta import FileInfo
from cloche.node.files import normalize

FILE_TYPES = {"dir": "FILE_TYPE_DIRECTORY", "file": "FILE_TYPE_FILE", "symlink": "FILE_TYPE_SYMLINK"}


def timestamp(seconds: float) -> str:
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def entry(info: FileInfo) -> dict[str, Any]:
    """envd's EntryInfo; a symlink takes the type of what it leads to (a file when it
    leads nowhere)."""
    out: dict[str, Any] = {
        "name": info.name,
        "type": FILE_TYPES.get(info.kind, "FILE_TYPE_UNSPECIFIED"),
        "path": info.path,
        "size": str(info.size),
        "mode": stat.S_IMODE(info.st_mode),
        "permissions": stat.filemode(info.st_mode),
        "owner": uid_name(info.uid),
        "group": uid_name(info.gid),
        "modifiedTime": timestamp(info.mtime),
    }
    if info.kind == "symlink":
        out["isSymlink"] = True
        out["symlinkTarget"] = normalize_target(info.target or "", info.path.rpartition("/")[0] or "/")
        out["type"] = FILE_TYPES.get(info.target_kind or "file", "FILE_TYPE_UNSPECIFIED")
    if info.metadata:
        out["metadata"] = info.metadata
    return out


class E2bFiles:
    """A sandbox's files as `user` acts on them."""

    def __init__(self, files: SandboxFiles, user: User) -> None:
        self.files = files
        self.user = user

    def path(self, path: str) -> str:
        """An absolute sandbox path; relative ones are relative to the user's home."""
        if not path:
            raise FileError("path is required", "invalid_path")
        return normalize(path, self.user.home)

    async def entry(self, path: str) -> dict[str, Any]:
        return entry(await self.files.info(path))

    async def list_dir(self, path: str, depth: int) -> list[dict[str, Any]]:
        return [entry(info) for info in await self.files.walk(path, depth)]

    async def mkdir(self, path: str) -> None:
        await self.files.mkdir_as(path, self.user.uid, self.user.gid)

    async def write_file(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        await self.mkdir(path.rpartition("/")[0] or "/")
        return await self.files.write_as(path, chunks, self.user.uid, self.user.gid)

    async def make_dir(self, path: str) -> bool:
        """mkdir -p; False when the directory already existed."""
        try:
            if await self.files.is_dir(path):
                return False
            raise FileError(f"{path}: exists and is not a directory", "exists")
        except FileError as exc:
            if exc.code != "not_found":
                raise
        await self.mkdir(path)
        return True

    async def remove_all(self, path: str) -> None:
        if path == "/":
            raise FileError("refusing to remove /", "invalid_path")
        try:
            await self.files.remove(path, recursive=True)
        except FileError as exc:
            if exc.code != "not_found":
                raise

    async def move(self, src: str, dst: str) -> None:
        await self.mkdir(dst.rpartition("/")[0] or "/")
        await self.files.rename(src, dst)


def normalize_target(target: str, parent: str) -> str:
    full = target if target.startswith("/") else f"{parent.rstrip('/')}/{target}"
    parts: list[str] = []
    for part in full.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


CONNECT_CODES = {
    "not_found": "not_found", "exists": "already_exists", "not_empty": "failed_precondition",
    "permission_denied": "permission_denied", "disk_full": "resource_exhausted",
    "too_large": "resource_exhausted", "not_running": "unavailable",
}  # fmt: skip


def connect_code(exc: FileError) -> str:
    if exc.code in CONNECT_CODES:
        return CONNECT_CODES[exc.code]
    return "invalid_argument" if status_of(exc) == 400 else "internal"
