"""Path-safe file access to a running sandbox's root, from the host.

Every path is resolved with openat2(RESOLVE_IN_ROOT) against the sandbox's merged root:
`..` and absolute symlinks are clamped to that root, so a symlink to / planted inside
the sandbox leads back into the sandbox, never to the host (the `docker cp` bug,
CVE-2018-15664). The final component is opened with O_NOFOLLOW when we create or
replace it. Files we create are owned by the sandbox's own root.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from cloche.node import linux
from cloche.node.errors import FileError

RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS | linux.RESOLVE_NO_XDEV
MAX_PATH = 4096
MAX_NAME = 255


@dataclass
class Entry:
    name: str
    path: str
    type: str  # file, dir, symlink, other
    size: int
    mode: int
    mtime: float
    target: str | None = None


def normalize(path: str, cwd: str = "/workspace") -> str:
    """Validate a user-supplied sandbox path and make it absolute (inside the sandbox)."""
    if not isinstance(path, str) or not path:
        raise FileError("path is required", "invalid_path")
    if "\0" in path:
        raise FileError("path contains a NUL byte", "invalid_path")
    if len(path.encode()) > MAX_PATH:
        raise FileError(f"path is longer than {MAX_PATH} bytes", "invalid_path")
    full = path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}"
    parts = []
    for part in full.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise FileError("path may not contain '..'", "invalid_path")
        if len(part.encode()) > MAX_NAME:
            raise FileError(f"path component longer than {MAX_NAME} bytes", "invalid_path")
        parts.append(part)
    return "/" + "/".join(parts)


def errno_to_error(exc: OSError, path: str) -> FileError:
    mapping = {
        errno.ENOENT: ("not_found", "no such file or directory"),
        errno.ENOTDIR: ("not_a_directory", "a path component is not a directory"),
        errno.EISDIR: ("is_a_directory", "is a directory"),
        errno.EEXIST: ("exists", "already exists"),
        errno.ENOTEMPTY: ("not_empty", "directory not empty"),
        errno.ENOSPC: ("disk_full", "the sandbox's disk quota is exhausted"),
        errno.EDQUOT: ("disk_full", "the sandbox's disk quota is exhausted"),
        errno.ELOOP: ("symlink_loop", "too many levels of symbolic links"),
        errno.EXDEV: ("invalid_path", "path crosses a mount"),
        errno.EACCES: ("permission_denied", "permission denied"),
        errno.EPERM: ("permission_denied", "operation not permitted"),
        errno.ENAMETOOLONG: ("invalid_path", "name too long"),
    }
    code, text = mapping.get(exc.errno or 0, ("io_error", exc.strerror or "I/O error"))
    return FileError(f"{path}: {text}", code)


class SandboxFS:
    """File operations confined to one sandbox root; what it creates belongs to
    `owner_uid` and `owner_gid` (host ids; the group defaults to the owner's id)."""

    def __init__(self, root: str, owner_uid: int, owner_gid: int | None = None) -> None:
        self.root = root
        self.owner = owner_uid
        self.group = owner_uid if owner_gid is None else owner_gid

    def _root_fd(self) -> int:
        try:
            return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise FileError("sandbox root is not mounted", "not_running") from exc

    def open_path(self, path: str, flags: int, mode: int = 0) -> int:
        """An fd of `path` resolved inside the root (symlinks clamped to it)."""
        root = self._root_fd()
        try:
            return linux.openat2(root, path.lstrip("/") or ".", flags, mode, RESOLVE)
        except OSError as exc:
            raise errno_to_error(exc, path) from exc
        finally:
            os.close(root)

    def open_parent(self, path: str) -> tuple[int, str]:
        """An os.O_PATH fd of the parent directory and the final name."""
        parent, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise FileError("the sandbox root itself cannot be replaced", "invalid_path")
        return self.open_path(parent or "/", os.O_PATH | os.O_DIRECTORY), name

    def read(self, path: str, limit: int) -> bytes:
        fd = self.open_path(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise FileError(f"{path}: is a directory", "is_a_directory")
            if not stat.S_ISREG(st.st_mode):
                raise FileError(f"{path}: not a regular file", "not_a_file")
            if st.st_size > limit:
                raise FileError(f"{path}: file is larger than {limit} bytes", "too_large")
            chunks = []
            while data := os.read(fd, 1 << 20):
                chunks.append(data)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def open_read(self, path: str) -> int:
        """An fd for streaming a regular file out."""
        fd = self.open_path(path, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileError(f"{path}: not a regular file", "not_a_file")
        return fd

    def write(self, path: str, data: bytes, mode: int = 0o644) -> int:
        """Atomically replace `path` with `data` (write a temp file, fsync, rename)."""
        return self.write_chunks(path, [data], mode)

    def write_chunks(self, path: str, chunks: Iterable[bytes], mode: int = 0o644) -> int:
        parent, name = self.open_parent(path)
        tmp = f".cloche-tmp-{secrets.token_hex(6)}"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             mode & 0o777, dir_fd=parent)  # fmt: skip
            except OSError as exc:
                raise errno_to_error(exc, path) from exc
            written = 0
            try:
                os.fchown(fd, self.owner, self.group)
                os.fchmod(fd, mode & 0o777)
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        written += n
                os.fsync(fd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=parent)
                raise errno_to_error(exc, path) from exc
            finally:
                os.close(fd)
            try:
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as exc:
                os.unlink(tmp, dir_fd=parent)
                raise errno_to_error(exc, path) from exc
            return written
        finally:
            os.close(parent)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """mkdir -p, every new directory owned by the sandbox's root."""
        current = "/"
        for part in [p for p in path.split("/") if p]:
            current = current.rstrip("/") + "/" + part
            parent, name = self.open_parent(current)
            try:
                os.mkdir(name, mode & 0o777, dir_fd=parent)
                os.chown(name, self.owner, self.group, dir_fd=parent, follow_symlinks=False)
            except FileExistsError:
                fd = self.open_path(current, os.O_PATH)
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                os.close(fd)
                if not is_dir:
                    raise FileError(f"{current}: exists and is not a directory", "exists") from None
            except OSError as exc:
                raise errno_to_error(exc, current) from exc
            finally:
                os.close(parent)

    def stat(self, path: str) -> Entry:
        parent, name = self.open_parent(path) if path != "/" else (self.open_path("/", os.O_PATH), ".")
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        except OSError as exc:
            raise errno_to_error(exc, path) from exc
        finally:
            os.close(parent)
        return _entry(name if name != "." else "/", path, st, target)

    def list(self, path: str) -> list[Entry]:
        fd = self.open_path(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            entries = []
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
                except OSError:
                    continue
                entries.append(_entry(name, f"{path.rstrip('/')}/{name}", st, target))
            return entries
        finally:
            os.close(fd)

    def is_dir(self, path: str) -> bool:
        fd = self.open_path(path, os.O_PATH)
        try:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def remove(self, path: str, recursive: bool = False) -> None:
        parent, name = self.open_parent(path)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    _rmtree_at(parent, name)
                else:
                    os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        except OSError as exc:
            raise errno_to_error(exc, path) from exc
        finally:
            os.close(parent)

    def rename(self, src: str, dst: str) -> None:
        sp, sname = self.open_parent(src)
        try:
            dp, dname = self.open_parent(dst)
            try:
                os.rename(sname, dname, src_dir_fd=sp, dst_dir_fd=dp)
            except OSError as exc:
                raise errno_to_error(exc, f"{src} -> {dst}") from exc
            finally:
                os.close(dp)
        finally:
            os.close(sp)

    def symlink(self, path: str, target: str) -> None:
        parent, name = self.open_parent(path)
        try:
            os.symlink(target, name, dir_fd=parent)
            os.chown(name, self.owner, self.group, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise errno_to_error(exc, path) from exc
        finally:
            os.close(parent)

    def hardlink(self, path: str, existing: str) -> None:
        src = self.open_path(existing, os.O_PATH | os.O_NOFOLLOW)
        parent, name = self.open_parent(path)
        try:
            if stat.S_ISDIR(os.fstat(src).st_mode):
                raise FileError(f"{existing}: cannot hard-link a directory", "invalid_link")
            os.link(f"/proc/self/fd/{src}", name, dst_dir_fd=parent, follow_symlinks=True)
        except OSError as exc:
            raise errno_to_error(exc, path) from exc
        finally:
            os.close(src)
            os.close(parent)


def _entry(name: str, path: str, st: os.stat_result, target: str | None) -> Entry:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else (
        "symlink" if stat.S_ISLNK(st.st_mode) else "other")  # fmt: skip
    return Entry(name=name, path=path, type=kind, size=st.st_size, mode=stat.S_IMODE(st.st_mode),
                 mtime=st.st_mtime, target=target)  # fmt: skip


def _rmtree_at(parent: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            st = os.stat(child, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _rmtree_at(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
