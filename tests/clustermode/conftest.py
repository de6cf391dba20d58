"""A real cluster for the whole module: etcd, PostgreSQL, SeaweedFS, two `cloche server`
replicas and three `cloche node run` agents, as `cloche cluster local` starts them,
with a short lease and checkpoint interval so failover happens within a test's time."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.client import Client
from cloche.cluster.local.launcher import BUCKET, LocalCluster, Options
from cloche.cluster.local.node import NodeAgent
from cloche.node.config import node_key

# A 4 s lease fences 1.5 s before expiry: short enough for a test, long enough not to
# fence on a loaded 2-core machine. Networking is left off: these tests are about
# placement, failover and drains, and tests/network covers each node's networking.
CLUSTER_ENV = {
    "CLOCHE_LEASE_TTL_S": "4",
    "CLOCHE_LEASE_MARGIN_S": "1.5",
    "CLOCHE_CHECKPOINT_INTERVAL_S": "2",
    "CLOCHE_NETWORK": "0",
}


class Cluster:
    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.key = local.admin_key.read_text().strip()

    def url(self, replica: int = 0) -> str:
        return f"http://127.0.0.1:{self.local.replicas[replica].port}"

    def client(self, replica: int = 0) -> Client:
        return Client(self.url(replica), self.key, timeout=120)

    def node(self, node_id: str) -> NodeAgent:
        return next(n for n in self.local.nodes if n.name == node_id)

    def env(self) -> dict[str, str]:
        """What the launcher gave its children: the shared database, state and S3."""
        assert self.local.postgres is not None and self.local.weed is not None
        dsn, weed = self.local.postgres.dsn, self.local.weed
        return {**os.environ, "CLOCHE_DATABASE_URL": dsn, "CLOCHE_STATE_DSN": dsn,
                "CLOCHE_BLOB_URL": weed.bucket(BUCKET, exist_ok=True), **weed.credentials()}  # fmt: skip

    def restart_node(self, node_id: str) -> None:
        """Start a node again that a test killed (same id, data and port)."""
        self.local.restart_node(node_id)

    def restart_replica(self, index: int) -> None:
        replica = self.local.replicas[index]
        assert self.local.etcd is not None
        if replica.child is not None and replica.child.alive():
            return
        replica.spawn(self.local.root / "cluster", self.local.etcd.endpoint, self.env())
        replica.wait_ready()

    def runc_ids(self, node_id: str) -> set[str]:
        """The sandboxes with a runtime directory on the node (running or paused ones)."""
        run = Path("/run/cloche") / node_key(self.node(node_id).root)
        return {p.name for p in run.glob("sb_*")} if run.exists() else set()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    saved = {k: os.environ.get(k) for k in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)
    root = Path(tempfile.mkdtemp(prefix="cloche-cluster-", dir="/var/tmp"))  # PostgreSQL's user must reach it
    root.chmod(0o755)
    local = LocalCluster(Options(nodes=3, port=0, data_dir=root, pool_size=0), event=print)
    try:
        local.start()
        yield Cluster(local)
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
