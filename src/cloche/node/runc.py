"""The OCI runtime driver: start, inspect, freeze and destroy one container by id.

runc is the driver. gVisor's runsc would be the stronger tier, but the runsc Debian
ships (2022-12) cannot hand a listening socket into the sandbox (no --preserve-fds),
which the resident supervisor needs; it is refused with that reason rather than
half-working.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cloche.node.errors import RuntimeFailure


class OciDriver:
    """Drives an OCI runtime binary with its own state root."""

    binary_name = "runc"

    def __init__(self, state_root: Path, binary: str | None = None) -> None:
        self.state_root = state_root
        found = binary or shutil.which(self.binary_name)
        if not found:
            raise RuntimeFailure(f"{self.binary_name} is not installed (apt-get install {self.binary_name})")
        self.binary = found
        state_root.mkdir(parents=True, exist_ok=True)

    def _base(self) -> list[str]:
        return [self.binary, "--root", str(self.state_root)]

    def _call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._base() + list(args), capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeFailure(f"{self.binary_name} {args[0]} failed: {proc.stderr.strip()}")
        return proc

    def run(self, container_id: str, bundle: Path, listen_fd: int, log: Path) -> int:
        """Start the container detached, handing it `listen_fd` as its fd 3; returns the
        pid of its init. runc's own early errors (before its log is set up) land in
        runc.err beside the log."""
        pid_file = bundle / "pid"
        argv = self._base() + ["--log", str(log), "--log-format", "json", "run", "--detach", "--pid-file",
                               str(pid_file), "--preserve-fds", "1", "--bundle", str(bundle), container_id]  # fmt: skip
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        errors = os.open(log.with_suffix(".err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, devnull, 1),
                (os.POSIX_SPAWN_DUP2, errors, 2),
                (os.POSIX_SPAWN_DUP2, listen_fd, 3),
            ]
            pid = os.posix_spawn(self.binary, argv, os.environ, file_actions=actions)
        finally:
            os.close(devnull)
            os.close(errors)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            try:
                early = log.with_suffix(".err").read_text(errors="replace").strip()[-500:]
            except OSError:
                early = ""
            raise RuntimeFailure(f"{self.binary_name} run failed ({code}): {_last_error(log)} {early}".strip())
        return int(pid_file.read_text())

    def state(self, container_id: str) -> dict[str, Any] | None:
        proc = self._call("state", container_id, check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def statuses(self) -> dict[str, str]:
        """Every container in this state root and its status, in one call."""
        if not self.state_root.exists():
            return {}  # (runc would create its root just to list nothing)
        proc = self._call("list", "--format", "json", check=False)
        if proc.returncode != 0 or not proc.stdout.strip() or proc.stdout.strip() == "null":
            return {}
        return {c["id"]: c["status"] for c in json.loads(proc.stdout)}

    def list_ids(self) -> list[str]:
        return list(self.statuses())

    def pause(self, container_id: str) -> None:
        """Freeze with the cgroup freezer. On a loaded host the freezer may not settle
        within runc's own wait ("unable to freeze"), so a few attempts are made."""
        for attempt in range(4):
            proc = self._call("pause", container_id, check=False)
            if proc.returncode == 0:
                return
            if "unable to freeze" not in proc.stderr or attempt == 3:
                raise RuntimeFailure(f"{self.binary_name} pause failed: {proc.stderr.strip()}")
            time.sleep(0.05 * (attempt + 1))

    def resume(self, container_id: str) -> None:
        self._call("resume", container_id)

    def delete(self, container_id: str) -> None:
        """Kill every process of the container and remove its state and cgroup."""
        if not (self.state_root / container_id).exists():
            return  # no such container (runc would also recreate a removed state root)
        proc = self._call("delete", "--force", container_id, check=False)
        if proc.returncode != 0 and "does not exist" not in proc.stderr:
            raise RuntimeFailure(f"{self.binary_name} delete failed: {proc.stderr.strip()}")

    def delete_all(self) -> None:
        for container_id in self.list_ids():
            self.delete(container_id)


class RuncDriver(OciDriver):
    binary_name = "runc"


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text().strip().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            return line
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg"))
    return lines[-1] if lines else "no log"


DRIVERS: dict[str, type[OciDriver]] = {"runc": RuncDriver}
UNSUPPORTED = {
    "runsc": "Debian's runsc (2022-12) cannot pass the supervisor's socket into the sandbox (no --preserve-fds)",
}


def driver_for(name: str, state_root: Path) -> OciDriver:
    if name in UNSUPPORTED:
        raise RuntimeFailure(f"runtime driver {name!r} is not supported: {UNSUPPORTED[name]}")
    if name not in DRIVERS:
        raise RuntimeFailure(f"unknown runtime driver {name!r} (choose from {', '.join(DRIVERS)})")
    return DRIVERS[name](state_root)
