"""Connecting to a unix socket that lies in a directory a sandbox's root can write.

The supervisor's socket (gVisor) and an agent's `agent.sock` live in directories bound
into the sandbox, whose root can replace the socket with a symlink to any host path,
another tenant's agent socket among them. The host therefore never connects by path:
it opens the last component with O_PATH | O_NOFOLLOW, checks that it is a socket, and
connects through /proc/self/fd/N, which names exactly that inode.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def pinned(path: str) -> Iterator[str]:
    """A path that reaches the socket at `path` (never a symlink's target) while open."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTSOCK, f"{path} is not a socket")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def connect_nofollow(path: str) -> socket.socket:
    """A non-blocking stream socket connected to the socket at `path` (see `pinned`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with pinned(path) as target:
            sock.connect(target)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
