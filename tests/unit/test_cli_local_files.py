"""A local file the CLI cannot read is a usage error naming the file and the option
(exit 2), not a traceback, and nothing is sent: no server is needed to see it."""

from __future__ import annotations

import os

import pytest

from tests.cli_zygote import run_cli

ENV = {**os.environ, "CLOCHE_URL": "http://127.0.0.1:9", "NO_COLOR": "1", "COLUMNS": "200"}


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["files", "put", "sb_x", "{missing}", "/workspace/f"], "LOCAL"),
        (["files", "put", "sb_x", "{dir}", "/workspace/f"], "LOCAL"),
        (["state", "put", "ns", "key", "--file", "{missing}"], "--file"),
        (["state", "append", "ns", "--file", "{missing}"], "--file"),
        (["secret", "add", "token", "--host", "api.example.com", "--value-file", "{missing}"], "--value-file"),
        (["agent", "invoke", "app", "user", "--data", "@{missing}"], "--data"),
    ],
    ids=["files-put", "files-put-dir", "state-put", "state-append", "secret-add", "agent-invoke"],
)
def test_an_unreadable_local_file_is_a_usage_error(tmp_path, args: list[str], option: str) -> None:
    paths = {"missing": str(tmp_path / "missing"), "dir": str(tmp_path)}
    done = run_cli([a.format(**paths) for a in args], env=ENV, text=True)
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for {option}" in done.stderr and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr and "cannot reach" not in done.stderr
