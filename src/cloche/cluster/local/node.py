"""One `cloche node run` agent of the local cluster: a node with its own id, region,
port and data directory under the cluster's, registering in the cluster's etcd. It
listens on loopback, or with `--regions` on its region's address inside the region's
network namespace (netns.py). It runs sandboxes, so it needs root; on stop it
hibernates or kills them (--on-shutdown) before it exits, which can take a while.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from cloche.cluster.local.netns import RegionNet
from cloche.cluster.local.process import Child, listening


class NodeAgent:
    """`cloche node run` as node `node_id` in `region`, its data in `root`, its node API on
    `port` of 127.0.0.1, or of the region's address inside its namespace when `net` is set."""

    def __init__(self, node_id: str, region: str, root: Path, port: int, net: RegionNet | None = None) -> None:
        self.name = node_id
        self.region = region
        self.root = root
        self.port = port
        self.net = net
        self.child: Child | None = None
        self._spawned_with: tuple[Path, str, dict[str, str], str, int] | None = None

    def spawn(self, cluster_dir: Path, etcd: str, env: dict[str, str], on_shutdown: str, pool_size: int) -> None:
        self._spawned_with = (cluster_dir, etcd, env, on_shutdown, pool_size)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.net is not None:  # the host's loopback services, as the region reaches them
            etcd, env = self.net.reach(etcd), self.net.environ(env)
        argv = [sys.executable, "-m", "cloche.cli", "node", "run", "--listen", f"{self.host}:{self.port}",
                "--data-dir", str(self.root), "--cluster-dir", str(cluster_dir), "--etcd", etcd,
                "--node-id", self.name, "--region", self.region, "--on-shutdown", on_shutdown,
                "--pool-size", str(pool_size)]  # fmt: skip
        if self.net is not None:
            argv = self.net.command(argv)
        self.child = Child(self.name, argv, self.root / "node.log", env=env)

    @property
    def host(self) -> str:
        """The address the node API listens on (the servers, on the host, reach it there)."""
        return "127.0.0.1" if self.net is None else self.net.address

    def wait_ready(self, timeout: float = 120.0, cancelled: threading.Event | None = None) -> None:
        """Return once the node API accepts connections."""
        assert self.child is not None
        self.child.wait_ready(lambda: listening(self.host, self.port), timeout, cancelled)

    def crashed(self) -> bool:
        """Whether it exited on its own (a crash, or a kill -9 from a test) rather than by stop()."""
        return self.child is not None and not self.child.alive()

    def restart(self) -> None:
        """Start it again as it was started (same id, data, port and environment), e.g. after
        a kill -9; it reconciles what the dead process left (containers, mounts, cgroups)."""
        assert self._spawned_with is not None
        self.spawn(*self._spawned_with)
        self.wait_ready()

    def sweep(self) -> None:
        """After a crash: start it again on its data dir just so it reconciles what the dead
        process left, then stop it as usual."""
        self.restart()
        self.stop()

    def stop(self) -> None:
        """SIGTERM: the node hibernates or kills its sandboxes, then exits (SIGKILL after 2 minutes)."""
        if self.child is not None:
            self.child.stop(timeout=120)
