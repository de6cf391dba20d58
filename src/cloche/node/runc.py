"""The OCI runtime driver: start, inspect, freeze and destroy one container by id.

`OciDriver` is what every tier shares (runc's and runsc's command lines agree on state,
list, pause, resume and delete); `RuncDriver` starts a container with the supervisor's
listening socket handed in as fd 3. The gVisor tier is `cloche.node.gvisor`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from cloche.node.errors import RuntimeFailure
from cloche.node.spec import Limits


class OciDriver:
    """Drives an OCI runtime binary with its own state root."""

    binary_name = "runc"
    # gVisor's netstack takes the interfaces present when the sandbox boots, so the
    # node must make the sandbox's network namespace, with its link, before `run`.
    network_before_start = False
    # gVisor: the sandbox's pids limit is its processes' RLIMIT_NPROC, set at boot.
    pids_fixed_at_boot = False

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

    def socket_path(self, bundle: Path) -> Path:
        """Where the host reaches the sandbox's supervisor."""
        return bundle / "sock"

    def host_limits(self, limits: Limits) -> Limits:
        """The limits written to the sandbox's cgroup on the host."""
        return limits

    def prepare(self, bundle: Path, uid: int) -> None:
        """What the bundle needs on the host before the container starts (`uid`: the
        sandbox's root on the host)."""

    def run(self, container_id: str, bundle: Path, log: Path) -> int:
        """Start the container detached with its supervisor listening; returns the pid
        of its init (runc) or sandbox process (runsc)."""
        raise NotImplementedError

    def _spawn(self, what: str, argv: list[str], log: Path, fds: tuple[int, ...] = ()) -> None:
        """Run one command of the runtime to completion; its own early errors (before its
        log is set up) land in <log>.err."""
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        errors = os.open(log.with_suffix(".err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                       (os.POSIX_SPAWN_DUP2, errors, 2)]  # fmt: skip
            actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(fds)]
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        finally:
            os.close(devnull)
            os.close(errors)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self.fail(f"{what} failed ({code})", log)

    def fail(self, what: str, log: Path) -> None:
        try:
            early = log.with_suffix(".err").read_text(errors="replace").strip()[-500:]
        except OSError:
            early = ""
        raise RuntimeFailure(f"{self.binary_name} {what}: {_last_error(log)} {early}".strip())

    def _exists(self, container_id: str) -> bool:
        return (self.state_root / container_id).exists()

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
        if not self._exists(container_id):
            return  # no such container (runc would also recreate a removed state root)
        proc = self._call("delete", "--force", container_id, check=False)
        if proc.returncode != 0 and "does not exist" not in proc.stderr:
            raise RuntimeFailure(f"{self.binary_name} delete failed: {proc.stderr.strip()}")

    def delete_all(self) -> None:
        for container_id in self.list_ids():
            self.delete(container_id)


class RuncDriver(OciDriver):
    binary_name = "runc"

    def run(self, container_id: str, bundle: Path, log: Path) -> int:
        """The host binds the supervisor's socket and runc hands it in as fd 3
        (--preserve-fds 1), so the socket file lives only on the host."""
        sock_path = self.socket_path(bundle)
        sock_path.unlink(missing_ok=True)
        pid_file = bundle / "pid"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(sock_path))
            os.chmod(sock_path, 0o600)
            listener.listen(128)
            argv = self._base() + ["--log", str(log), "--log-format", "json", "run", "--detach", "--pid-file",
                                   str(pid_file), "--preserve-fds", "1", "--bundle", str(bundle),
                                   container_id]  # fmt: skip
            self._spawn("run", argv, log, (listener.fileno(),))
        finally:
            listener.close()
        return int(pid_file.read_text())


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
