"""`cloche app|agent|snapshot|state|demo` and `cloche sandbox hibernate|fork` as a user
runs them: subprocesses against a real `cloche up`, configured by environment."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_zygote import run_cli
from tests.integration.conftest import Server

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def cloche(server: Server) -> Run:
    """Run the CLI as a fresh tenant; stdin is /dev/null unless ``input`` is given."""
    _, key = server.tenant()
    env = {**os.environ, "CLOCHE_URL": server.url, "CLOCHE_API_KEY": key, "NO_COLOR": "1"}
    env.pop("COLUMNS", None)

    def run(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(args, env=env, input=input, text=True, timeout=timeout)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def test_app_deploy_example_and_agent_commands(cloche: Run, tmp_path: Path):
    assert ok(cloche("app", "deploy", "memo", "--example", "memo", "--idle-pause", "120")).strip() == "memo version 1"

    reply = json.loads(ok(cloche("agent", "invoke", "memo", "alice", "-m", "remember the sky is green")))
    assert reply["turn"] == 1 and reply["user"] == "alice"
    recalled = json.loads(ok(cloche("agent", "invoke", "memo", "alice", "--data", '{"message": "recall"}')))
    assert recalled["reply"] == "the sky is green"
    piped = json.loads(ok(cloche("agent", "invoke", "memo", "alice", input='{"message": "run: ls /workspace"}')))
    assert "memory.json" in piped["reply"]
    body = tmp_path / "body.json"
    body.write_text('{"message": "recall"}')
    assert json.loads(ok(cloche("agent", "invoke", "memo", "alice", "-d", f"@{body}")))["turn"] == 4
    status = cloche("agent", "invoke", "memo", "alice", "-X", "GET", "--path", "health", "-i")
    assert json.loads(ok(status))["ok"] is True and "HTTP 200" in status.stderr

    table = ok(cloche("agent", "ls", "memo"))
    header, row = table.splitlines()[:2]
    assert header.split() == ["KEY", "STATE", "SANDBOX", "VERSION", "LAST", "ACTIVITY", "CREATED"]
    assert row.split()[:4] == ["alice", "running", row.split()[2], "1"] and row.split()[2].startswith("sb_")
    assert json.loads(ok(cloche("agent", "get", "memo", "alice", "--json")))["key"] == "alice"

    apps = ok(cloche("app", "ls"))
    assert "memo" in apps and "python3 /workspace/agent.py" in apps and "pause 120s" in apps
    assert json.loads(ok(cloche("app", "get", "memo", "--json")))["spec"]["idle"]["pause_after_s"] == 120

    missing = cloche("agent", "invoke", "nope", "alice", "-m", "hi")
    assert missing.returncode == 1 and "not found" in missing.stderr
    crashed = cloche("agent", "invoke", "memo", "alice", "-m", "crash")
    assert crashed.returncode == 1 and "agent_crashed" in crashed.stderr
    no_command = cloche("app", "deploy", "other")
    assert no_command.returncode == 2 and "--command or --example" in no_command.stderr

    ok(cloche("agent", "rm", "memo", "alice", "--state"))
    assert "no agents yet" in cloche("agent", "ls", "memo").stderr
    ok(cloche("app", "deploy", "shell", "--command", "python3 /nowhere.py", "-e", "A=1", "--max-concurrency", "2"))
    assert json.loads(ok(cloche("app", "get", "shell", "--json")))["spec"]["env"] == {"A": "1"}
    ok(cloche("app", "rm", "memo"))
    ok(cloche("app", "rm", "shell"))
    assert "no apps" in cloche("app", "ls").stderr


def test_sandbox_hibernate_fork_and_snapshots(cloche: Run):
    sid = ok(cloche("sandbox", "create", "--idle-pause", "300", "--idle-hibernate", "600", "--on-timeout",
                    "hibernate", "--timeout", "900")).strip()  # fmt: skip
    made = [sid]
    try:
        detail = ok(cloche("sandbox", "get", sid))
        assert "pause 300s, hibernate 600s" in detail and "hibernate" in detail
        ok(cloche("sandbox", "exec", sid, "--", "sh", "-c", "echo kept > /workspace/f"))
        assert ok(cloche("sandbox", "hibernate", sid)).split() == [sid, "hibernated"]
        assert ok(cloche("sandbox", "exec", sid, "--", "cat", "/workspace/f")) == "kept\n"
        assert "running" in ok(cloche("sandbox", "get", sid))
        assert ok(cloche("sandbox", "hibernate", sid, "--drop-local")).split() == [sid, "hibernated"]

        fork = ok(cloche("sandbox", "fork", sid)).strip()
        made.append(fork)
        assert fork.startswith("sb_") and fork != sid
        assert ok(cloche("sandbox", "exec", fork, "--", "cat", "/workspace/f")) == "kept\n"

        snap = ok(cloche("snapshot", "create", sid, "first")).strip()
        assert snap.startswith("snap")
        listing = ok(cloche("snapshot", "ls"))
        assert snap in listing and "first" in listing and sid in listing
        restored = ok(cloche("sandbox", "create", "--snapshot", snap)).strip()
        made.append(restored)
        assert ok(cloche("sandbox", "exec", restored, "--", "cat", "/workspace/f")) == "kept\n"
        dup = cloche("snapshot", "create", sid, "first")
        assert dup.returncode == 1 and "error" in dup.stderr
        ok(cloche("snapshot", "rm", snap))
        assert "no snapshots" in cloche("snapshot", "ls").stderr
        assert cloche("snapshot", "get", snap).returncode == 1
    finally:
        cloche("sandbox", "kill", *made)


def test_state_commands(cloche: Run):
    assert ok(cloche("state", "put", "notes", "greeting", "hello")).strip() == "1"
    got = cloche("state", "get", "notes", "greeting", "-v")
    assert ok(got) == "hello" and "version 1" in got.stderr
    assert ok(cloche("state", "put", "notes", "piped", input="from stdin")).strip() == "1"
    assert ok(cloche("state", "get", "notes", "piped")) == "from stdin"
    stale = cloche("state", "put", "notes", "greeting", "x", "--if-match", "7")
    assert stale.returncode == 1 and "precondition_failed" in stale.stderr
    taken = cloche("state", "put", "notes", "greeting", "x", "--if-none-match")
    assert taken.returncode == 1
    assert ok(cloche("state", "put", "notes", "greeting", "hi again", "--if-match", "1")).strip() == "2"
    rows = [line.split() for line in ok(cloche("state", "ls", "notes")).splitlines()]
    assert rows == [["KEY", "VERSION", "SIZE"], ["greeting", "2", "8B"], ["piped", "1", "10B"]]
    assert [k["key"] for k in json.loads(ok(cloche("state", "ls", "notes", "pi", "--json")))] == ["piped"]
    ok(cloche("state", "rm", "notes", "piped"))
    assert cloche("state", "get", "notes", "piped").returncode == 1

    assert ok(cloche("state", "append", "notes", "first", "-k", "once")).strip() == "1"
    assert ok(cloche("state", "append", "notes", "first", "-k", "once")).strip() == "1"
    assert ok(cloche("state", "append", "notes", input="second")).strip() == "2"
    assert ok(cloche("state", "read", "notes")) == "1\tfirst\n2\tsecond\n"
    assert [json.loads(line)["data"] for line in ok(cloche("state", "read", "notes", "--after", "1", "--json"))
            .splitlines()] == ["second"]  # fmt: skip
    assert ok(cloche("state", "trim", "notes", "1")).strip() == "2"
    assert ok(cloche("state", "read", "notes", "--wait", "0.2", "--after", "2")) == ""


def test_demo_runs_users_through_sleep_and_wake(cloche: Run):
    result = cloche("demo", "--users", "3", "--rounds", "1", timeout=180)
    out = ok(result)
    for phase in ("first invoke (create)", "warm invoke", "wake from paused", "wake from hibernated"):
        assert phase in out
    assert "p50" in out and "p95" in out
    assert "all users' memories intact: yes (3/3 users verified)" in out
    assert cloche("app", "ls").stdout == ""  # the demo cleans up after itself
