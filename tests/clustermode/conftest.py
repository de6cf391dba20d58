"""A real cluster for the whole session: etcd, PostgreSQL, SeaweedFS, two `cloche server`
replicas and three `cloche node run` agents, as `cloche cluster local` starts them,
with a short lease and checkpoint interval so failover happens within a test's time.

It is also the `server` of every test collected here, so the suites written against
`cloche up` (the agents suites, the E2B flows) run unchanged on a cluster: a thin module
imports a suite's tests and fixtures, and they reach the cluster through its front,
which spreads connections over both replicas. A test that cannot hold on a cluster is
named in its module's `SKIP` with the reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from cloche.client import Client
from cloche.cluster.local.front import Front
from cloche.cluster.local.launcher import BUCKET, LocalCluster, Options
from cloche.cluster.local.node import NodeAgent
from cloche.node.config import node_key
from tests.conftest import LoopThread
from tests.e2b.conftest import e2b  # noqa: F401 - the E2B flows' fixture, over this `server`
from tests.integration.conftest import Api, tenant_client  # noqa: F401 - likewise

# A 4 s lease fences 1.5 s before expiry: short enough for a test, long enough not to
# fence on a loaded 2-core machine. Networking is left off: these tests are about
# placement, failover and drains, and tests/network covers each node's networking.
CLUSTER_ENV = {
    "CLOCHE_LEASE_TTL_S": "4",
    "CLOCHE_LEASE_MARGIN_S": "1.5",
    "CLOCHE_CHECKPOINT_INTERVAL_S": "2",
    "CLOCHE_NETWORK": "0",
}


HERE = Path(__file__).parent


class Cluster:
    def __init__(self, local: LocalCluster, front_port: int, env: Mapping[str, str] = CLUSTER_ENV) -> None:
        self.local = local
        self.cluster_env = dict(env)  # what its processes were started with, over CLUSTER_ENV
        self.key = local.admin_key.read_text().strip()
        self.front = f"http://127.0.0.1:{front_port}"

    def url(self, replica: int = 0) -> str:
        return "http://{}:{}".format(*self.local.replica_addresses()[replica])

    def client(self, replica: int = 0) -> Client:
        return Client(self.url(replica), self.key, timeout=120)

    def node(self, node_id: str) -> NodeAgent:
        return next(n for n in self.local.nodes if n.name == node_id)

    def env(self) -> dict[str, str]:
        """What the launcher gave its children: the shared database, state and S3."""
        assert self.local.postgres is not None and self.local.weed is not None
        dsn, weed = self.local.postgres.dsn, self.local.weed
        return {**os.environ, **self.cluster_env, "CLOCHE_DATABASE_URL": dsn, "CLOCHE_STATE_DSN": dsn,
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


class ClusterServer(Api):
    """The cluster as the suites' `server`: one address (the front) and the admin key.
    The E2B SDKs' envd calls go through the front too, landing on either replica: each
    sandbox's envd home (e2b/home.py) serves them, whichever replica they reach."""

    def __init__(self, cluster: Cluster) -> None:
        self.url = cluster.front
        self.admin_key = cluster.key


LOGS = Path(tempfile.gettempdir()) / "clustermode-logs"
_logs_cleared: list[bool] = []


@contextlib.contextmanager
def running_cluster(nodes: int = 3, regions: tuple[str, ...] = ("local",), env: dict[str, str] | None = None,
                    **options: Any) -> Iterator[Cluster]:  # fmt: skip
    """A cluster of `nodes` nodes given `regions` in turn (more launcher.Options in
    `options`), its processes started with CLUSTER_ENV and `env`."""
    root = Path(tempfile.mkdtemp(prefix="cloche-cluster-", dir="/var/tmp"))  # PostgreSQL's user must reach it
    root.chmod(0o755)
    local = LocalCluster(Options(nodes=nodes, port=0, data_dir=root, regions=list(regions), pool_size=0, **options),
                         event=print)  # fmt: skip
    loop = LoopThread()
    front = Front(local.replica_addresses())
    started_with = {**CLUSTER_ENV, **(env or {})}
    try:
        # only while its processes start (they copy it): the tests after these, in the
        # same process, must not inherit networking off
        with mock.patch.dict(os.environ, started_with):
            local.start()
        front.backends = local.replica_addresses()
        loop.run(front.start("127.0.0.1", 0))
        yield Cluster(local, front.port, started_with)
    finally:
        loop.run(front.close())
        loop.stop()
        local.stop()
        keep = LOGS / root.name  # the processes' logs, for a post-mortem
        if not _logs_cleared:  # every cluster of this run keeps its logs; an earlier run's go
            shutil.rmtree(LOGS, ignore_errors=True)
            _logs_cleared.append(True)
        for log in root.glob("*/*.log"):
            (keep / log.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, keep / log.parent.name / log.name)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """The cluster the suites share, stopped when they are done (before the leak check)."""
    with running_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def isolated_cluster() -> Iterator[Cluster]:
    """A cluster of the module's own, for tests that kill nodes, replicas, etcd or
    PostgreSQL: the suites sharing the session's must not see those faults."""
    with running_cluster() as c:
        yield c


@pytest.fixture(scope="package")
def server(cluster: Cluster) -> ClusterServer:
    return ClusterServer(cluster)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip what a suite's module here names in its `SKIP` (test name: why it cannot hold on a cluster)."""
    for item in items:
        if isinstance(item, pytest.Function) and item.path.parent == HERE:
            reason = getattr(item.module, "SKIP", {}).get(item.originalname)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"on a cluster: {reason}"))
