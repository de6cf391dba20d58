"""A real etcd member on loopback (Debian's `etcd` from etcd-server), for `cloche cluster
local` and the cluster tests: started with free ports in a directory of its own, and
stoppable, restartable and freezable (SIGSTOP), so the tests can make etcd fail the ways
it fails in production while the local cluster stops it cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import urllib.request
from pathlib import Path

from cloche.cluster.local.process import Child, MissingService, free_ports


def etcd_binary() -> str:
    """The `etcd` on PATH."""
    found = shutil.which("etcd")
    if not found:
        raise MissingService("etcd", "apt-get install etcd-server")
    return found


class EtcdServer:
    """One etcd member whose data lives in `root` (a fresh temporary directory if None).
    `endpoint` ("127.0.0.1:port") stays the same across restarts, so clients reconnect to
    it as they would to a production etcd that came back."""

    def __init__(self, root: Path | None = None) -> None:
        self.dir = root or Path(tempfile.mkdtemp(prefix="cloche-etcd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = etcd_binary()
        self.client_port, self.peer_port = free_ports(2)
        self.endpoint = f"127.0.0.1:{self.client_port}"
        self.child: Child | None = None

    def start(self, timeout: float = 15.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://{self.endpoint}"
        self.child = Child(
            "etcd",
            [self.binary, "--name", "t", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}", "--logger", "zap", "--log-outputs", "stderr"],
            self.dir / "etcd.log",
        )  # fmt: skip
        self.child.wait_ready(self.healthy, timeout)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as r:
                return bool(json.load(r).get("health") == "true")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it as an operator or a crash would: SIGKILL, then reap."""
        if self.child is not None:
            self.resume()
            self.child.kill()
            self.child = None

    def shutdown(self) -> None:
        """Stop it cleanly (SIGTERM, SIGKILL only if it hangs)."""
        if self.child is not None:
            self.resume()
            self.child.stop()
            self.child = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers."""
        if self.child is not None and self.child.alive():
            os.kill(self.child.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.child is not None and self.child.alive():
            os.kill(self.child.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
