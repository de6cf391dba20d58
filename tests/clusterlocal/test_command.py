"""`cloche cluster local` as a user runs it: off a terminal it prints one line per event,
and SIGTERM while it is still starting stops what it started, leaving no process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cloche-clusterlocal-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path / "cluster"
    shutil.rmtree(path, ignore_errors=True)


def processes_under(path: Path) -> list[str]:
    """Command lines of the processes that name `path` (every service of the cluster does)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


def test_sigterm_while_starting_stops_everything(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cloche.cli", "cluster", "local", "--nodes", "1", "--port", "0",
                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "PostgreSQL ready" in line:
                assert processes_under(data_dir)  # etcd and PostgreSQL run
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 0, "".join(lines)
    assert lines[0].split(" ", 1)[1].startswith("etcd ready on 127.0.0.1:")
    assert lines[-1].endswith("stopped\n"), "".join(lines)
    assert not any("did not stop cleanly" in line for line in lines)
    assert processes_under(data_dir) == []
    assert (data_dir / "pg" / "data" / "PG_VERSION").exists()  # the data stays for the next start


def test_a_region_that_cannot_name_a_namespace_is_refused_before_anything_starts(data_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cloche.cli", "cluster", "local", "--regions", "eu,US West",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "lower-case letters, digits and dashes" in done.stderr
    assert not data_dir.exists()
