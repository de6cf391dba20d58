"""Running commands in a sandbox: ``cloche sandbox exec`` streams one command's output
and exits with its status; ``cloche shell`` bridges the local terminal to a PTY in the
sandbox over a WebSocket, or, with no terminal, streams a piped script through the shell.

``sandbox_exec`` is mounted by :mod:`cloche.cli.sandboxes`; ``shell`` is a top-level
command.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from cloche.cli import errors, ui
from cloche.cli.errors import EXIT_API_ERROR
from cloche.cli.options import KeyOpt, SandboxId, UrlOpt, connect, handle, pairs
from cloche.client import Sandbox
from cloche.client.models import ExecExit, ExecOutput

app = typer.Typer()


def sandbox_exec(
    sandbox_id: SandboxId,
    cmd: Annotated[
        list[str],
        typer.Argument(
            help="Command and arguments (put them after --). A single argument containing "
            "spaces is run as a shell command line (sh -c).",
            show_default=False,
        ),
    ],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (repeatable).")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory (default: /workspace).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Kill the command after N seconds.")] = None,
    interactive: Annotated[
        bool, typer.Option("--stdin", "-i", help="Send this process's stdin to the command.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Run a command in a sandbox, streaming its output; exit with its exit code.

    Exits 125 if the command could not be run (unknown sandbox, bad key, ...).
    """
    command: str | list[str] = cmd[0] if len(cmd) == 1 and any(c.isspace() for c in cmd[0]) else cmd
    stdin = sys.stdin.read() if interactive else None
    env_vars = pairs(env, "--env")
    with errors.handled(EXIT_API_ERROR), connect(url, api_key) as client:
        code = _streamed(handle(client, sandbox_id), command, env=env_vars or None, cwd=cwd, stdin=stdin,
                         timeout_s=timeout)  # fmt: skip
    raise typer.Exit(code)


def _streamed(sbx: Sandbox, command: str | list[str], **kw: Any) -> int:
    """Run ``command`` with ``exec_stream``, writing its output as it comes; its exit status."""
    code: int | None = None
    for event in sbx.exec_stream(command, **kw):
        if isinstance(event, ExecOutput):
            stream = sys.stdout if event.type == "stdout" else sys.stderr
            stream.write(event.data)
            stream.flush()
        elif isinstance(event, ExecExit):
            code = _exit_status(event)
    if code is None:
        ui.err.print("[red]error:[/] the output stream ended before the command exited")
        raise typer.Exit(EXIT_API_ERROR)
    return code


def _exit_status(event: ExecExit) -> int:
    if event.timed_out:
        ui.err.print(f"[yellow]command timed out[/] (exit {event.exit_code})")
    if event.truncated:
        ui.err.print("[yellow]output was truncated[/]")
    if event.exit_code is not None:
        return event.exit_code
    return 128 + event.signal if isinstance(event.signal, int) else 1


@app.command()
def shell(
    sandbox_id: SandboxId,
    cmd: Annotated[str | None, typer.Option("--cmd", help="Command line to run (default: a login shell).")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory (default: /workspace).")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Open an interactive terminal in a sandbox (exits with the shell's exit code).

    With a terminal on stdin and stdout it runs in a PTY, in raw mode, and follows window
    resizes. Otherwise (``cloche shell ID < script.sh``) there is no terminal, as with
    ssh: the shell reads the piped input as a script, so no line of it can be lost to
    a terminal's line editing, and its output comes back as it is written.
    """
    from websockets.exceptions import InvalidHandshake

    with connect(url, api_key) as client:
        sbx = client.sandboxes.connect(sandbox_id)  # typed errors for a bad id or key
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise typer.Exit(_streamed(sbx, cmd or ["/bin/sh", "-l"], cwd=cwd, stdin=sys.stdin.read()))
        cols, rows = shutil.get_terminal_size()
        try:
            with sbx.pty(cmd=cmd, rows=rows, cols=cols, cwd=cwd) as ws:
                code = _PtySession(ws).run()
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            ui.err.print(f"[red]error:[/] cannot open a terminal: {exc}", highlight=False)
            raise typer.Exit(1) from None
    raise typer.Exit(code)


class _PtySession:
    """Bridges the local terminal and a PTY WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.exit_code = 0
        self.done = threading.Event()

    def _pump_output(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                if isinstance(message, bytes):
                    os.write(sys.stdout.fileno(), message)
                else:
                    control = json.loads(message)
                    if control.get("type") == "exit":
                        code = control.get("exit_code")
                        self.exit_code = code if isinstance(code, int) else 1
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.done.set()

    def _send(self, data: bytes | str) -> bool:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(data)
        except ConnectionClosed:
            return False
        return True

    def run(self) -> int:
        """Run until the remote side exits; return its exit code."""
        reader = threading.Thread(target=self._pump_output, daemon=True)
        reader.start()
        self._terminal_input()
        self.done.wait()
        reader.join(5)
        return self.exit_code

    def _terminal_input(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)

        def on_resize(signum: int, frame: Any) -> None:
            cols, rows = shutil.get_terminal_size()
            self._send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

        previous = signal.signal(signal.SIGWINCH, on_resize)
        try:
            tty.setraw(fd)
            while not self.done.is_set():
                try:
                    ready = select.select([fd], [], [], 0.1)[0]
                except InterruptedError:  # SIGWINCH
                    continue
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk or not self._send(chunk):
                        return
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
