"""Thin ctypes bindings for the Linux syscalls Python's os module lacks.

Why: path-safe file access needs openat2(RESOLVE_IN_ROOT), and idmapped template
mounts need open_tree/mount_setattr/move_mount; neither is in Python 3.11's stdlib.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
MNT_DETACH = 2

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


OPENAT2_EAGAIN_TRIES = 16


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` with RESOLVE_* restrictions.

    With RESOLVE_BENEATH or RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename or a
    mount anywhere on the host raced a ".." in the path, and asks the caller to retry (a
    busy node mounts and unmounts sandbox disks all the time); so it is retried here."""
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    encoded = os.fsencode(path)
    for _ in range(OPENAT2_EAGAIN_TRIES):
        rc = _libc.syscall(SYS_OPENAT2, dirfd, encoded, buf, len(how))
        if rc >= 0:
            return rc
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(
        os.fsencode(source),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    _check(rc, f"mount {target}")


def umount(target: str, detach: bool = True) -> None:
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH if detach else 0), f"umount {target}")


def idmapped_bind(source: str, target: str, userns_fd: int, extra_attrs: int = 0) -> None:
    """Bind-mount `source` on `target`, shifting ownership through the given user namespace."""
    tree = _check(
        _libc.syscall(
            SYS_OPEN_TREE,
            AT_FDCWD,
            os.fsencode(source),
            OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE,
        ),
        f"open_tree {source}",
    )
    try:
        attr = struct.pack("QQQQ", MOUNT_ATTR_IDMAP | extra_attrs, 0, 0, userns_fd)
        buf = ctypes.create_string_buffer(attr, len(attr))
        _check(
            _libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, buf, len(attr)),
            f"mount_setattr {source}",
        )
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"move_mount {target}",
        )
    finally:
        os.close(tree)


def mountpoints() -> list[str]:
    """Every mount point on the host, from /proc/self/mountinfo (octal escapes decoded)."""
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split(b" ")[4]
            points.append(raw.decode("unicode_escape").encode("latin-1").decode())
    return points
