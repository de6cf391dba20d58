"""Idmapped bind mounts of templates, so each sandbox's own root owns the template's
files without a copy and without sharing one uid range across sandboxes."""

from __future__ import annotations

import os
import subprocess

from cloche.node import linux


def userns_fd(helper: str, uid_base: int, size: int) -> int:
    """An fd for a user namespace that maps 0..size to uid_base..uid_base+size.

    The namespace is made by `cloche-init userns`, a tiny static helper started with
    posix_spawn/vfork, which is safe in a multi-threaded server (a Python fork is not).
    """
    proc = subprocess.Popen([helper, "userns"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.read(1) != b"r":
            raise OSError("userns helper failed to start")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{proc.pid}/{name}", "w") as f:
                f.write(f"0 {uid_base} {size}\n")
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if proc.stdin:
            proc.stdin.close()
        if proc.stdout:
            proc.stdout.close()
        proc.wait()


def bind_shifted(helper: str, source: str, target: str, uid_base: int, size: int) -> None:
    """Mount `source` read-only at `target` with host uid N shown as uid_base+N."""
    fd = userns_fd(helper, uid_base, size)
    try:
        linux.idmapped_bind(
            source, target, fd, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
        )
    finally:
        os.close(fd)
