"""`python -m cloche.cli ARGS` for the tests, forked from a process that imported the SDK already.

Why: the suite runs the CLI a few hundred times, and each run spends most of its CPU
importing the SDK and its libraries (httpx, pydantic, Typer, rich) before it does
anything. A zygote imports them once; every command is then a fork of it that runs
`cloche.cli` as `python -m cloche.cli` does (runpy, as `__main__`), with the caller's
argv, environment, working directory and stdin/stdout/stderr (and no other open file),
and exits with the command's status. It stays a separate process with its own exit code
and output, as the tests need, and nothing of the CLI itself is imported before the
fork: the zygote checks that no `cloche.cli` module is loaded, so every cloche module that
reads the environment or the terminal when imported does so in the command's own process.
What the zygote fixed when it started stays its: the interpreter's settings (PYTHON*
variables, hash seed, sys.path) and what the preloaded libraries read on import. The
command ends as a process of its own would (threads joined, atexit handlers run, stdout
and stderr flushed), then with os._exit, so that nothing of the zygote's runs in it.

Servers (`cloche up`, tests/integration/conftest.py's Server) start the same way from a
second zygote, which imports the server itself first (SERVER_PRELOAD; the zygote refuses a
preload that reads a CLOCHE_ setting on import, which every fork would then share): a
start then pays the server's own startup, not the imports that were most of its CPU, and
the suite starts servers over a hundred times. `Zygote.spawn` returns at once with a
`Forked` handle (pid, poll, wait, send_signal, kill); the zygote reaps the process and
reports its exit status. `Zygote.run` is `spawn` and `wait` with the output captured.

One zygote of each kind per test process (each pytest-xdist worker), started on first
use and stopped at the session's end (tests/conftest.py); it also exits when its parent
goes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from pathlib import Path
from typing import Any

PRELOAD = ("cloche.client", "typer", "rich.console", "rich.table", "rich.progress", "rich.live")
# For servers (`cloche up`): the server and its node, whose modules read no CLOCHE_ setting
# on import (the server reads them when it starts), which `serve` checks as it preloads them.
SERVER_PRELOAD = ("cloche.server.runner", "cloche.server.app")


# ---- the zygote process ---------------------------------------------------------------------------


def _child(request: dict[str, object], fds: list[int]) -> None:
    """In the fork: become `python -m cloche.cli ARGS` and exit with its status."""
    code = 1
    try:
        if request.get("setsid"):
            os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # only stdio, as subprocess's close_fds gives
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        os.chdir(str(request["cwd"]))
        sys.argv = ["cloche", *request["args"]]  # type: ignore[misc]
        import runpy

        try:
            runpy.run_module("cloche.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        except BaseException:
            import traceback

            traceback.print_exc()
    finally:
        # The interpreter's own exit steps, as a process of its own would take them (threads
        # joined, then atexit handlers: logging.shutdown flushes a server's access log), but
        # not the zygote's `finally`, which would remove its socket directory: os._exit.
        with contextlib.suppress(Exception):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


class _Watched(MutableMapping[str, str]):
    """os.environ while the zygote preloads: a view of it that records the names read. A
    module that keeps it (`from os import environ`) keeps a live view, which in each
    command shows the command's own environment."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        self._environ = environ
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._environ[key]

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self._environ

    def __setitem__(self, key: str, value: str) -> None:
        self._environ[key] = value

    def __delitem__(self, key: str) -> None:
        del self._environ[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)

    def copy(self) -> dict[str, str]:  # a copy of all of it (wsgiref's, on import) reads no setting
        return dict(self._environ)

    def items(self) -> ItemsView[str, str]:
        return self._environ.items()

    def values(self) -> ValuesView[str]:
        return self._environ.values()


def serve(path: str, preload: list[str]) -> None:
    """Import `preload`, then accept commands on the unix socket at `path` until the parent goes away."""
    environ, os.environ = os.environ, _Watched(os.environ)  # type: ignore[assignment]
    try:
        for name in preload:
            __import__(name)
    finally:
        read, os.environ = sorted(os.environ.read), environ  # type: ignore[attr-defined]
    if settings := [k for k in read if k.startswith("CLOCHE_")]:
        raise SystemExit(f"cli_zygote: importing {preload} read {settings}: every fork would get the zygote's value")
    loaded = sorted(m for m in sys.modules if m == "cloche.cli" or m.startswith("cloche.cli."))
    if loaded:
        raise SystemExit(f"cli_zygote: the preload imported {loaded}; the CLI must be imported in each command")
    if threading.active_count() != 1:
        raise SystemExit("cli_zygote: the preload started a thread; a fork would copy it half-way")
    parent = os.getppid()
    try:
        _accept(path, parent)
    finally:  # the socket's directory goes with the zygote, however it ends
        shutil.rmtree(Path(path).parent, ignore_errors=True)


def _accept(path: str, parent: int) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # ready
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    while os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            if key.data is None:
                conn, _ = listener.accept()
                try:
                    msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                except OSError:  # the caller went away mid-request: nothing was started
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    conn.close()
                    _child(json.loads(msg), fds)
                for fd in fds:
                    os.close(fd)
                try:
                    conn.send(str(pid).encode())
                except OSError:  # the caller went away: nobody would ever stop the command
                    os.kill(pid, signal.SIGKILL)
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))  # reaped all the same
            else:
                pid, conn = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()


# ---- the tests' side ------------------------------------------------------------------------------


class Forked:
    """A command forked from a zygote, with the part of `subprocess.Popen` the tests use.
    Not this process's child: its exit status comes from the zygote, which reaps it."""

    def __init__(self, conn: socket.socket, pid: int, args: list[str]) -> None:
        self._conn = conn
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._receive(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._receive(left if self._conn.fileno() >= 0 else min(0.05, left or 0.05))
        return self.returncode

    def _receive(self, timeout: float | None) -> None:
        """The exit status, if the zygote sends it within `timeout`. Once the zygote is gone
        (the session's end), the process only counts as ended (-9) when it no longer exists."""
        if self._conn.fileno() < 0:
            if timeout:
                time.sleep(timeout)
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = -9
            return
        self._conn.settimeout(timeout)  # not MSG_DONTWAIT: under a timeout, Python waits it out
        try:
            status = self._conn.recv(64)
        except (BlockingIOError, TimeoutError):
            return
        if status:
            self.returncode = int(status)
        self._conn.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # reaped since, its status on the way
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """A zygote of this test process: started on first use, stopped by `stop`."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        self._preload = preload
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._path = ""

    def _started(self) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._dir = tempfile.TemporaryDirectory(prefix="cloche-cli-zygote-")
                self._path = str(Path(self._dir.name) / "sock")
                repo = str(Path(__file__).resolve().parent.parent)
                argv = [sys.executable, "-m", "tests.cli_zygote", self._path, *self._preload]
                self._proc = subprocess.Popen(argv, cwd=repo)
                deadline = time.monotonic() + 60
                while not os.path.exists(self._path):
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the CLI zygote did not start (exit {self._proc.poll()})")
                    time.sleep(0.01)
            return self._path

    def run(self, args: list[str], *, env: Mapping[str, str], input: bytes | None = None, timeout: float = 120,
            cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """Run `python -m cloche.cli ARGS` as `subprocess.run(..., capture_output=True)` would;
        stdin is `input`, or /dev/null without it."""
        with (
            (tempfile.TemporaryFile() if input is not None else contextlib.nullcontext()) as stdin,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
        ):
            if input is not None:
                stdin.write(input)
                stdin.seek(0)
            proc = self.spawn(args, env=env, stdin=None if stdin is None else stdin.fileno(), stdout=stdout.fileno(),
                              stderr=stderr.fileno(), cwd=cwd)  # fmt: skip
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                raise subprocess.TimeoutExpired(proc.args, timeout) from None
            stdout.seek(0)
            stderr.seek(0)
            return subprocess.CompletedProcess(proc.args, code, stdout.read(), stderr.read())

    def spawn(self, args: list[str], *, env: Mapping[str, str], stdout: int, stderr: int, stdin: int | None = None,
              cwd: str | None = None, setsid: bool = False) -> Forked:  # fmt: skip
        """Start `python -m cloche.cli ARGS` as `subprocess.Popen(..., stdin=stdin or DEVNULL,
        stdout=stdout, stderr=stderr, cwd=cwd, start_new_session=setsid)` would, and return at once."""
        request = {"args": list(args), "env": dict(env), "cwd": cwd or os.getcwd(), "setsid": setsid}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.settimeout(60)
            conn.connect(self._started())
            with open(os.devnull, "rb") as devnull:
                fds = [devnull.fileno() if stdin is None else stdin, stdout, stderr]
                socket.send_fds(conn, [json.dumps(request).encode()], fds)
            pid = int(conn.recv(64))
        except BaseException:
            conn.close()
            raise
        return Forked(conn, pid, [sys.executable, "-m", "cloche.cli", *args])

    @property
    def pid(self) -> int | None:
        """The zygote's process id, while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None


ZYGOTE = Zygote(PRELOAD)
SERVER_ZYGOTE = Zygote(SERVER_PRELOAD)


def run_cli(args: list[str] | tuple[str, ...], *, env: Mapping[str, str] | None = None,
            input: bytes | str | None = None, timeout: float = 120, text: bool = False, check: bool = False,
            cwd: str | None = None) -> subprocess.CompletedProcess[Any]:  # fmt: skip
    """`subprocess.run([sys.executable, "-m", "cloche.cli", *args], capture_output=True, ...)`
    with the same `env`, `input`, `timeout`, `text` and `check`, run in a fork of the zygote."""
    data = input.encode() if isinstance(input, str) else input
    done = ZYGOTE.run(list(args), env=os.environ if env is None else env, input=data, timeout=timeout, cwd=cwd)
    if text:
        done = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    if check:
        done.check_returncode()
    return done


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
