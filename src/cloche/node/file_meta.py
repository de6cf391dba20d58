"""What a file is, beyond its bytes: owner and group, mode, a symlink's target and what
it leads to, user metadata kept as extended attributes, and recursive listings.

Why it exists: E2B's envd describes files with owners, permissions, symlink targets and
metadata, and lists directories to a depth. Reading that needs host-side calls (stat at
a directory fd, xattrs through /proc/self/fd) that only the node can make, so the node
answers in plain data (`FileInfo`) and the protocol layer above only translates it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from cloche.node.errors import FileError
from cloche.node.files import SandboxFS, errno_to_error

METADATA_XATTR = "user.e2b."  # user metadata's xattr prefix (files already carry it)
MAX_WALK = 20_000  # entries in one recursive listing at most


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "symlink" if stat.S_ISLNK(mode) else "other"


@dataclass(frozen=True)
class FileInfo:
    """One file as the sandbox sees it. `uid`/`gid` are ids inside the sandbox;
    `st_mode` has the type and permission bits as stat(2) gives them. For a symlink,
    `target` is its text and `target_kind` the kind of what it leads to (None when it
    leads nowhere)."""

    name: str
    path: str
    kind: str  # file, dir, symlink, other (the entry itself, not followed)
    size: int
    st_mode: int
    uid: int
    gid: int
    mtime: float
    target: str | None = None
    target_kind: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _metadata_at(dir_fd: int, name: str, mode: int) -> dict[str, str]:
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return {}
    target = f"/proc/self/fd/{dir_fd}/{name}" if name != "." else f"/proc/self/fd/{dir_fd}"
    try:
        keys = [k for k in os.listxattr(target, follow_symlinks=False) if k.startswith(METADATA_XATTR)]
        return {k[len(METADATA_XATTR) :]: os.getxattr(target, k, follow_symlinks=False).decode(errors="replace")
                for k in keys}  # fmt: skip
    except OSError:
        return {}


def _info_at(fs: SandboxFS, dir_fd: int, name: str, path: str) -> FileInfo:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise errno_to_error(exc, path) from exc
    target = target_kind = None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = ""
        try:
            fd = fs.open_path(path, os.O_PATH)
            try:
                target_kind = kind_of(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
        except FileError:
            pass
    return FileInfo(name=name if path != "/" else "/", path=path, kind=kind_of(st.st_mode), size=st.st_size,
                    st_mode=st.st_mode, uid=st.st_uid - fs.owner, gid=st.st_gid - fs.owner, mtime=st.st_mtime,
                    target=target, target_kind=target_kind,
                    metadata=_metadata_at(dir_fd, name, st.st_mode))  # fmt: skip


def info(fs: SandboxFS, path: str) -> FileInfo:
    """`path` itself (a symlink is described, not followed)."""
    if path == "/":
        fd = fs.open_path("/", os.O_PATH | os.O_DIRECTORY)
        try:
            return _info_at(fs, fd, ".", "/")
        finally:
            os.close(fd)
    parent, name = fs.open_parent(path)
    try:
        return _info_at(fs, parent, name, path)
    finally:
        os.close(parent)


def walk(fs: SandboxFS, path: str, depth: int) -> list[FileInfo]:
    """The directory's entries and, `depth` levels down, theirs (symlinked directories
    are listed, not entered); at most MAX_WALK entries."""
    os.close(fs.open_path(path, os.O_RDONLY | os.O_DIRECTORY))
    out: list[FileInfo] = []
    _walk(fs, path, max(1, depth), out)
    return out


def _walk(fs: SandboxFS, path: str, depth: int, out: list[FileInfo]) -> None:
    try:
        fd = fs.open_path(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileError:
        return
    children = []
    try:
        for name in sorted(os.listdir(fd)):
            child = f"{path.rstrip('/')}/{name}"
            try:
                entry = _info_at(fs, fd, name, child)
            except FileError:
                continue
            out.append(entry)
            if len(out) >= MAX_WALK:
                return
            if depth > 1 and entry.kind == "dir":
                children.append(child)
    finally:
        os.close(fd)
    for child in children:
        _walk(fs, child, depth - 1, out)


def set_metadata(fs: SandboxFS, path: str, metadata: dict[str, str]) -> None:
    """Keep `metadata` (keys lower-cased) on a regular file or directory."""
    if not metadata:
        return
    fd = fs.open_path(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        for key, value in metadata.items():
            os.setxattr(fd, METADATA_XATTR + key.lower(), value.encode())
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:
            raise FileError(f"{path}: extended attributes are not supported here", "invalid_path") from exc
        raise errno_to_error(exc, path) from exc
    finally:
        os.close(fd)
