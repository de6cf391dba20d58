"""The real cluster the cluster benchmarks run on: `LocalCluster` (what `cloche cluster
local` starts: etcd, PostgreSQL, SeaweedFS, two `cloche server` replicas, three `cloche
node run` agents) with the settings the benchmarks state, plus the few HTTP and
PostgreSQL reads they share. Leaving the `with` stops every process and removes its data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from results import OWN_NODE_KEYS, env_float, log
from server import DATA_PARENT, UNLIMITED

from cloche.cluster.local.launcher import LocalCluster, Options
from cloche.cluster.local.process import wait_for
from cloche.node.config import node_key

NODES = 3


def settings() -> dict[str, str]:
    """The cluster's settings (its processes read them from the environment): the lease
    BENCH_CLUSTER_LEASE_S (nodes fence 1.5 s before it expires), a 2 s checkpoint interval, networking
    off (the embedded baseline runs without it too) and the rate limits lifted."""
    lease = env_float("BENCH_CLUSTER_LEASE_S", 4.0)
    return {"CLOCHE_LEASE_TTL_S": f"{lease:g}", "CLOCHE_LEASE_MARGIN_S": "1.5",
            "CLOCHE_CHECKPOINT_INTERVAL_S": "2", "CLOCHE_NETWORK": "0", **UNLIMITED}  # fmt: skip


class Rig:
    """A started LocalCluster, reached through replica 0 with the admin key."""

    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.key = local.admin_key.read_text().strip()
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.lease_s = float(os.environ["CLOCHE_LEASE_TTL_S"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local.replicas[0].port}"

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def node_of(self, http: httpx.Client, sandbox_id: str) -> str:
        r = http.get(f"/v1/sandboxes/{sandbox_id}")
        r.raise_for_status()
        return str(r.json()["node"])

    def live_nodes(self, http: httpx.Client) -> set[str]:
        return {n["id"] for n in http.get("/v1/nodes").json()["items"] if n["state"] == "ready"}


@contextmanager
def cluster(nodes: int = NODES, regions: tuple[str, ...] = ("local",), **options: Any) -> Iterator[Rig]:
    """`nodes` nodes, given `regions` in turn (several: each with a bucket of its own),
    and more launcher.Options in `options`."""
    with mock.patch.dict(os.environ, settings()):
        yield from _cluster(nodes, regions, options)


def _cluster(nodes: int, regions: tuple[str, ...], more: dict[str, Any]) -> Iterator[Rig]:
    root = Path(tempfile.mkdtemp(prefix="cloche-bench-cluster-", dir=DATA_PARENT))
    root.chmod(0o755)  # PostgreSQL's user must reach its data dir
    options = Options(nodes=nodes, port=0, data_dir=root, regions=list(regions), pool_size=0, **more)
    local = LocalCluster(options, event=lambda m: log(f"cluster: {m}"))
    OWN_NODE_KEYS.update(node_key(n.root) for n in local.nodes)
    try:
        started = time.perf_counter()
        local.start()
        log(f"cluster: {nodes} nodes and 2 replicas up in {time.perf_counter() - started:.0f} s")
        rig = Rig(local)
        with rig.client() as http:
            wait_for(f"{nodes} nodes listed", lambda: len(rig.live_nodes(http)) == nodes, 60)
        yield rig
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)
