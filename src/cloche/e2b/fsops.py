"""File operations with E2B's semantics on top of cloche's path-safe SandboxFS: entries
in envd's EntryInfo shape (owner, group, permissions, symlink targets), files and
directories created as the acting user, recursive listings and removals, and file
metadata kept as `user.e2b.*` extended attributes."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cloche.control.errors import status_of
from cloche.e2b.users import User, uid_name
from cloche.node.errors import FileError
from cloche.node.files import SandboxFS, normalize

XATTR_PREFIX = "user.e2b."
MAX_SCAN = 20_000


def timestamp(seconds: float) -> str:
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "FILE_TYPE_DIRECTORY"
    if stat.S_ISREG(mode):
        return "FILE_TYPE_FILE"
    if stat.S_ISLNK(mode):
        return "FILE_TYPE_SYMLINK"
    return "FILE_TYPE_UNSPECIFIED"


class E2bFS(SandboxFS):
    """A SandboxFS whose new files and directories belong to `user` (inside the sandbox)."""

    def __init__(self, fs: SandboxFS, user: User) -> None:
        super().__init__(fs.root, fs.owner + user.uid)
        self.base = fs.owner
        self.user = user

    def path(self, path: str) -> str:
        """An absolute sandbox path; relative ones are relative to the user's home."""
        if not path:
            raise FileError("path is required", "invalid_path")
        return normalize(path, self.user.home)

    # ---- entries ---------------------------------------------------------------------

    def _entry_at(self, dir_fd: int, name: str, path: str) -> dict[str, Any]:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise _error(exc, path) from exc
        entry: dict[str, Any] = {
            "name": name if path != "/" else "/",
            "type": file_type(st.st_mode),
            "path": path,
            "size": str(st.st_size),
            "mode": stat.S_IMODE(st.st_mode),
            "permissions": stat.filemode(st.st_mode),
            "owner": uid_name(st.st_uid - self.base),
            "group": uid_name(st.st_gid - self.base),
            "modifiedTime": timestamp(st.st_mtime),
        }
        if stat.S_ISLNK(st.st_mode):
            entry["isSymlink"] = True
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                target = ""
            parent = path.rpartition("/")[0] or "/"
            entry["symlinkTarget"] = normalize_target(target, parent)
            try:
                fd = self._open(path, os.O_PATH)
                try:
                    entry["type"] = file_type(os.fstat(fd).st_mode)
                finally:
                    os.close(fd)
            except FileError:
                entry["type"] = "FILE_TYPE_FILE"
        metadata = self._metadata_at(dir_fd, name, st.st_mode)
        if metadata:
            entry["metadata"] = metadata
        return entry

    def entry(self, path: str) -> dict[str, Any]:
        if path == "/":
            fd = self._open("/", os.O_PATH | os.O_DIRECTORY)
            try:
                return self._entry_at(fd, ".", "/") | {"name": "/", "path": "/"}
            finally:
                os.close(fd)
        parent, name = self._parent(path)
        try:
            return self._entry_at(parent, name, path)
        finally:
            os.close(parent)

    def list_dir(self, path: str, depth: int) -> list[dict[str, Any]]:
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        os.close(fd)
        out: list[dict[str, Any]] = []
        self._walk(path, max(1, depth), out)
        return out

    def _walk(self, path: str, depth: int, out: list[dict[str, Any]]) -> None:
        try:
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileError:
            return
        try:
            names = sorted(os.listdir(fd))
            children = []
            for name in names:
                child = f"{path.rstrip('/')}/{name}"
                try:
                    entry = self._entry_at(fd, name, child)
                except FileError:
                    continue
                out.append(entry)
                if len(out) >= MAX_SCAN:
                    return
                if depth > 1 and entry["type"] == "FILE_TYPE_DIRECTORY" and not entry.get("isSymlink"):
                    children.append(child)
        finally:
            os.close(fd)
        for child in children:
            self._walk(child, depth - 1, out)

    # ---- metadata ----------------------------------------------------------------------

    def _metadata_at(self, dir_fd: int, name: str, mode: int) -> dict[str, str]:
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return {}
        target = f"/proc/self/fd/{dir_fd}/{name}" if name != "." else f"/proc/self/fd/{dir_fd}"
        try:
            keys = [k for k in os.listxattr(target, follow_symlinks=False) if k.startswith(XATTR_PREFIX)]
            return {k[len(XATTR_PREFIX) :]: os.getxattr(target, k, follow_symlinks=False).decode(errors="replace")
                    for k in keys}  # fmt: skip
        except OSError:
            return {}

    def set_metadata(self, path: str, metadata: dict[str, str]) -> None:
        if not metadata:
            return
        fd = self._open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            for key, value in metadata.items():
                os.setxattr(fd, XATTR_PREFIX + key.lower(), value.encode())
        except OSError as exc:
            raise _error(exc, path) from exc
        finally:
            os.close(fd)

    # ---- changes -----------------------------------------------------------------------

    def write_file(self, path: str, chunks: Iterable[bytes], mode: int = 0o644) -> int:
        parent = path.rpartition("/")[0] or "/"
        self.mkdir(parent)
        return self.write_chunks(path, chunks, mode)

    def make_dir(self, path: str) -> bool:
        """mkdir -p; False when the directory already existed."""
        try:
            if self.is_dir(path):
                return False
            raise FileError(f"{path}: exists and is not a directory", "exists")
        except FileError as exc:
            if exc.code != "not_found":
                raise
        self.mkdir(path)
        return True

    def remove_all(self, path: str) -> None:
        if path == "/":
            raise FileError("refusing to remove /", "invalid_path")
        try:
            self.remove(path, recursive=True)
        except FileError as exc:
            if exc.code != "not_found":
                raise

    def move(self, src: str, dst: str) -> None:
        parent = dst.rpartition("/")[0] or "/"
        self.mkdir(parent)
        self.rename(src, dst)

    # ---- watching ----------------------------------------------------------------------

    def scan(self, path: str, recursive: bool) -> dict[str, tuple[str, int, int, int]]:
        """relative name -> (type, size, mtime_ns, mode) for a directory (and below)."""
        out: dict[str, tuple[str, int, int, int]] = {}
        self._scan(path, "", recursive, out)
        return out

    def _scan(self, path: str, prefix: str, recursive: bool, out: dict[str, tuple[str, int, int, int]]) -> None:
        try:
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileError:
            return
        subdirs = []
        try:
            for name in os.listdir(fd):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                rel = prefix + name
                out[rel] = (file_type(st.st_mode), st.st_size, st.st_mtime_ns, st.st_mode)
                if len(out) >= MAX_SCAN:
                    return
                if recursive and stat.S_ISDIR(st.st_mode):
                    subdirs.append(name)
        finally:
            os.close(fd)
        for name in subdirs:
            self._scan(f"{path.rstrip('/')}/{name}", prefix + name + "/", recursive, out)


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


def _error(exc: OSError, path: str) -> FileError:
    if exc.errno == errno.ENOENT:
        return FileError(f"{path}: no such file or directory", "not_found")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FileError(f"{path}: permission denied", "permission_denied")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FileError(f"{path}: the sandbox's disk quota is exhausted", "disk_full")
    if exc.errno == errno.ENOTSUP:
        return FileError(f"{path}: extended attributes are not supported here", "invalid_path")
    return FileError(f"{path}: {exc.strerror or 'I/O error'}", "io_error")


CONNECT_CODES = {
    "not_found": "not_found", "exists": "already_exists", "not_empty": "failed_precondition",
    "permission_denied": "permission_denied", "disk_full": "resource_exhausted",
    "too_large": "resource_exhausted", "not_running": "unavailable",
}  # fmt: skip


def connect_code(exc: FileError) -> str:
    if exc.code in CONNECT_CODES:
        return CONNECT_CODES[exc.code]
    return "invalid_argument" if status_of(exc) == 400 else "internal"
