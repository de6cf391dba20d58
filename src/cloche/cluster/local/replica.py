"""One `cloche server` replica of the local cluster: a stateless API and control plane
on a loopback port of its own (the front spreads the cluster's one address over the
replicas), with its data directory under the cluster's, ready once `GET /healthz` answers.
With `--regions` it runs in a region's namespace instead, as that region's edge
(`CLOCHE_REGION`): its calls to another region's nodes cross the relay and its delay.
"""

from __future__ import annotations

import sys
import threading
import urllib.request
from pathlib import Path

from cloche.cluster.local.netns import RegionNet
from cloche.cluster.local.process import Child


class ServerReplica:
    """`cloche server` as `name`, its data in `root`, listening on `port` of 127.0.0.1, or of
    its region's address inside the region's namespace when `net` is set."""

    def __init__(self, name: str, root: Path, port: int, net: RegionNet | None = None) -> None:
        self.name = name
        self.root = root
        self.port = port
        self.net = net
        self.child: Child | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.net is None else self.net.address

    @property
    def admin_key(self) -> Path:
        return self.root / "admin-key"

    def spawn(self, cluster_dir: Path, etcd: str, env: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.net is not None:  # the host's services as the region reaches them; the region's edge
            etcd, env = self.net.reach(etcd), {**self.net.environ(env), "CLOCHE_REGION": self.net.name}
        argv = [sys.executable, "-m", "cloche.cli", "server", "--listen", f"{self.host}:{self.port}",
                "--data-dir", str(self.root), "--cluster-dir", str(cluster_dir), "--etcd", etcd,
                "--advertise", f"http://{self.host}:{self.port}"]  # fmt: skip
        if self.net is not None:
            argv = self.net.command(argv)
        self.child = Child(self.name, argv, self.root / "server.log", env=env)

    def wait_ready(self, timeout: float = 120.0, cancelled: threading.Event | None = None) -> None:
        """Return once the replica answers `GET /healthz`."""
        assert self.child is not None
        self.child.wait_ready(self.healthy, timeout, cancelled)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=30)
