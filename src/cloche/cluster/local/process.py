"""What every process of a local cluster shares: finding its binary (or saying how to
install it), picking free loopback ports, starting it in a session of its own with its
output in a log file, waiting until it answers, and stopping it (a polite signal, then
SIGKILL to its whole process group) so nothing of it is left behind.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MIN_PICKED_PORT = 10_000  # below it, the well-known and registered ports of the host's own services
_PICKER = random.SystemRandom()  # not the `random` module's state, which a caller may have seeded
# Host-wide reservations of picked ports: a lock file per port, held by the process that
# picked it (see _reserve). It keeps the last PORT_LOCKS_HELD; an older pick is long bound.
PORT_LOCKS = Path(tempfile.gettempdir()) / "cloche-ports"
PORT_LOCKS_HELD = 256
_held: list[int] = []  # the lock fds this process holds, oldest first
_held_lock = threading.Lock()


class Cancelled(Exception):
    """A stop was asked for while a process was still starting."""


class MissingService(RuntimeError):
    """A program the cluster needs is not installed; the message says how to install it."""

    def __init__(self, name: str, install: str) -> None:
        super().__init__(f"{name} not found: install it with `{install}` (`make setup` installs them all)")
        self.name = name
        self.install = install


def _ephemeral_ports() -> range:
    """The kernel's range of source ports for outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def _reserve(port: int) -> bool:
    """Take `port`'s host-wide lock, unless another pick holds it. Between a pick and the
    bind of the process it is for, the port is free, so another process's pick could take
    it too: two clusters started at once in two test workers did, and a replica's port was
    answered by the other cluster's SeaweedFS. Every pick takes the port's lock first."""
    try:
        PORT_LOCKS.mkdir(exist_ok=True)
        fd = os.open(PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # no place for locks (another user's directory): the pick goes unreserved
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    with _held_lock:
        _held.append(fd)
        while len(_held) > PORT_LOCKS_HELD:
            os.close(_held.pop(0))
    return True


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free right now (held open together so none repeats), each
    reserved host-wide for a while (_reserve) so that no other process picks it.

    They come from outside the kernel's ephemeral range: a port there can be taken as the
    source port of any outgoing connection between the pick and the server's bind, and on
    a busy machine one was (a replica failed with "address already in use")."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(MIN_PICKED_PORT, 65536) if p not in ephemeral] or list(range(MIN_PICKED_PORT, 65536))
    held: list[socket.socket] = []
    try:
        for _ in range(100 * n):
            if len(held) == n:
                break
            port = _PICKER.choice(candidates)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            if not _reserve(port):
                s.close()
                continue
            held.append(s)
        if len(held) < n:
            raise RuntimeError(f"fewer than {n} free loopback ports outside the ephemeral range {ephemeral}")
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def tail(path: Path, n: int = 2000) -> str:
    """The last n characters of a log, for an error message."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """The first truthy `check()` within `timeout` s, asked every `every` s; an exception
    counts as not yet. TimeoutError names `what` and the last answer. For the tests and
    benchmarks that drive a local cluster and wait on what it does."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported if it never passes
            last = e
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s (last: {last!r})")


class Child:
    """One child process in its own session (so a stop reaches its children too), its
    stdout and stderr appended to `log`."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, **popen
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout: float, cancelled: threading.Event | None = None) -> None:
        """Return once `ready()` holds; raise (and kill the process) if it exits, the time
        runs out, or `cancelled` is set (Cancelled: a stop was asked for meanwhile)."""
        deadline = time.monotonic() + timeout
        while not ready():
            if cancelled is not None and cancelled.is_set():
                self.kill()
                raise Cancelled(f"{self.name} was stopped while starting")
            if not self.alive() or time.monotonic() > deadline:
                why = f"exited with {self.proc.returncode}" if not self.alive() else f"not ready after {timeout:g} s"
                self.kill()
                raise RuntimeError(f"{self.name} {why}; its log ({self.log}) ends:\n{tail(self.log)}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig`, wait up to `timeout` for the exit, then SIGKILL the whole group."""
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group (whatever the process left running) and reap."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
