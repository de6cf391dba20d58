"""The tests' CLI zygote (tests/cli_zygote.py) runs a command as `python -m cloche.cli` does:
the same output, exit status and environment, stdin included, and a timeout kills it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_zygote import ZYGOTE, run_cli

ENV = {**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "NO_COLOR": "1"}


def real(args: list[str], env: dict[str, str] = ENV, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    stdin = subprocess.DEVNULL if input is None else None
    return subprocess.run([sys.executable, "-m", "cloche.cli", *args], env=env, input=input, stdin=stdin,
                          capture_output=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["sandbox", "--help"],
        ["sandbx"],  # a usage error: exit 2 and a suggestion on stderr
        ["sandbox", "ls", "--url", "http://127.0.0.1:9"],  # no server: exit 1
    ],
    ids=["version", "help", "usage-error", "unreachable"],
)
def test_same_output_and_status_as_a_real_process(args: list[str]) -> None:
    forked, process = run_cli(args, env=ENV), real(args)
    assert (forked.returncode, forked.stdout, forked.stderr) == (process.returncode, process.stdout, process.stderr)


def test_the_environment_and_stdin_are_the_callers() -> None:
    env = {**ENV, "CLOCHE_URL": "http://127.0.0.1:7"}  # read by the CLI in the command's process
    args = ["files", "put", "sb_x", "-", "/workspace/f"]  # reads stdin, then connects
    forked, process = run_cli(args, env=env, input=b"data"), real(args, env, b"data")
    assert b"127.0.0.1:7" in forked.stderr
    assert (forked.returncode, forked.stdout, forked.stderr) == (process.returncode, process.stdout, process.stderr)


def test_without_input_stdin_is_not_a_pipe() -> None:
    """No input is /dev/null, as the tests gave real processes: `state put` without a value
    then asks for one instead of reading an empty stdin."""
    args = ["state", "put", "ns", "key", "--url", "http://127.0.0.1:9"]
    forked, process = run_cli(args, env=ENV), real(args)
    assert forked.returncode == 2 and b"pipe it on stdin" in forked.stderr
    assert (forked.returncode, forked.stdout, forked.stderr) == (process.returncode, process.stdout, process.stderr)


def test_a_command_past_its_timeout_is_killed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(subprocess.TimeoutExpired):
            run_cli(["sandbox", "ls", "--url", url], env=ENV, timeout=1)
    zygote = ZYGOTE.pid
    children = Path(f"/proc/{zygote}/task/{zygote}/children")
    deadline = time.monotonic() + 10
    while children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children.read_text().split() == [], "the timed-out command is still running"
