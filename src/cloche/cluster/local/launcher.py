"""`cloche cluster local`'s launcher: it brings up etcd, PostgreSQL, SeaweedFS, two
server replicas and N nodes as children with their data under one directory, serves the
replicas on one address through the front, reports what happens while it runs, and on
Ctrl-C or SIGTERM stops everything in dependency order (servers, nodes, then S3,
PostgreSQL and etcd) so nothing of it is left running.

With `Options.netns` (`--regions`) each region's nodes run in a network namespace of the
region's own, and so do the replicas, one per region in turn as its edge; traffic between
regions passes a relay that delays it (netns.py, relay.py). etcd, PostgreSQL, S3 and the
front stay on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cloche.cluster.local.etcd import EtcdServer, etcd_binary
from cloche.cluster.local.front import Front
from cloche.cluster.local.netns import RegionNet, Regions
from cloche.cluster.local.node import NodeAgent
from cloche.cluster.local.postgres import PostgresServer, postgres_bin
from cloche.cluster.local.process import Cancelled, Child, MissingService, free_ports
from cloche.cluster.local.replica import ServerReplica
from cloche.cluster.local.table import Display
from cloche.cluster.local.weed import WeedS3, weed_binary
from cloche.fleet.placements import PlacementTable
from cloche.nodeapi import tls
from cloche.store.db import Store

BUCKET = "cloche"
REPLICAS = 2


def missing_services() -> list[MissingService]:
    """The programs the cluster needs that are not installed."""
    missing = []
    for find in (etcd_binary, postgres_bin, weed_binary):
        try:
            find()
        except MissingService as e:
            missing.append(e)
    return missing


@dataclass
class Options:
    nodes: int
    port: int
    data_dir: Path
    regions: list[str] = field(default_factory=lambda: ["local"])
    on_shutdown: str = "kill"
    pool_size: int = 1
    netns: bool = False  # each region in a network namespace of its own
    inter_region_delay_ms: float = 0.0  # one-way, added by the relay between regions (with netns)


class LocalCluster:
    """The cluster's processes; `start` and `stop` block, `event` hears what happened."""

    def __init__(self, options: Options, event: Callable[[str], None]) -> None:
        self.options = options
        self.root = options.data_dir.resolve()
        self.event = event
        self.cancelled = threading.Event()
        self.etcd: EtcdServer | None = None
        self.postgres: PostgresServer | None = None
        self.weed: WeedS3 | None = None
        self.regions: Regions | None = None
        self.relay: Child | None = None
        ports = free_ports(REPLICAS + options.nodes)
        self.replicas = [ServerReplica(f"server-{i + 1}", self.root / f"server-{i + 1}", ports[i])
                         for i in range(REPLICAS)]  # fmt: skip
        regions = options.regions
        self.nodes = [NodeAgent(f"node-{i + 1}", regions[i % len(regions)], self.root / f"node-{i + 1}",
                                ports[REPLICAS + i]) for i in range(options.nodes)]  # fmt: skip
        self._reported: set[str] = set()
        self._placements: PlacementTable | None = None

    @property
    def admin_key(self) -> Path:
        return self.root / "admin-key"

    def _step(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled

    def start(self) -> None:
        """Start every process in dependency order; raises Cancelled when a stop was asked for."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._start_services()
        self._step()
        assert self.etcd is not None and self.postgres is not None and self.weed is not None
        blob_url = self.weed.bucket(BUCKET, exist_ok=True)
        env = {**os.environ, "CLOCHE_DATABASE_URL": self.postgres.dsn, "CLOCHE_STATE_DSN": self.postgres.dsn,
               "CLOCHE_BLOB_URL": blob_url, **self.weed.credentials()}  # fmt: skip
        regions = sorted(set(self.options.regions))
        if len(regions) > 1:  # each region its own bucket, as each would have its own S3 store
            env["CLOCHE_REGION_BLOB_URLS"] = ",".join(f"{r}={self.weed.bucket(f'{BUCKET}-{r}', exist_ok=True)}"
                                                      for r in regions)  # fmt: skip
        self._upgrade_schema(env)
        if self.options.netns:
            self._build_regions()
        else:  # every region on loopback: measured, they would all look 1 ms apart; keep the configured matrix
            env["CLOCHE_RTT_PROBE_INTERVAL_S"] = "0"
        cluster_dir = self.root / "cluster"
        # the cluster CA the nodes share is made here, so they all start together; then
        # the servers, which find them all registered
        tls.ensure_ca(cluster_dir)
        self._step()
        for node in self.nodes:
            node.spawn(cluster_dir, self.etcd.endpoint, env, self.options.on_shutdown, self.options.pool_size)
        for node in self.nodes:
            node.wait_ready(cancelled=self.cancelled)
            self.event(f"{node.name} ({node.region}) ready on {node.host}:{node.port}")
        self._step()
        for replica in self.replicas:
            replica.spawn(cluster_dir, self.etcd.endpoint, env)
        for replica in self.replicas:
            replica.wait_ready(cancelled=self.cancelled)
            self.event(f"{replica.name} ready on {replica.host}:{replica.port}")
        shutil.copyfile(self.replicas[0].admin_key, self.admin_key)
        self.admin_key.chmod(0o600)

    def _start_services(self) -> None:
        """etcd, PostgreSQL and SeaweedFS need nothing of each other, so they start at the
        same time (a cluster is up ~4 s sooner); the first failure is raised once all
        three have finished, and `stop()` stops whichever did start."""
        self.etcd = EtcdServer(self.root / "etcd")
        self.postgres = PostgresServer(self.root / "pg")

        def weed() -> None:
            self.weed = WeedS3(self.root / "weed", self.cancelled)

        with ThreadPoolExecutor(3, thread_name_prefix="cluster-start") as pool:
            started = [pool.submit(self.etcd.start), pool.submit(self.postgres.start, cancelled=self.cancelled),
                       pool.submit(weed)]  # fmt: skip
        for future in started:
            future.result()
        self.event(f"etcd ready on {self.etcd.endpoint}")
        self.event(f"PostgreSQL ready on 127.0.0.1:{self.postgres.port}")
        assert self.weed is not None
        self.event(f"SeaweedFS S3 ready on {self.weed.url}")

    def _build_regions(self) -> None:
        """A namespace per region, the relay between them, and each node and replica in its region's."""
        assert self.etcd is not None and self.postgres is not None and self.weed is not None
        port_file = self.root / "relay.port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "cloche.cluster.local.relay", "--listen", "127.0.0.1:0",
                "--delay-ms", str(self.options.inter_region_delay_ms), "--port-file", str(port_file)]  # fmt: skip
        self.relay = Child("relay", argv, self.root / "relay.log")
        self.relay.wait_ready(lambda: bool(port_file.exists() and port_file.read_text()), 30, self.cancelled)
        relay_port = int(port_file.read_text())
        self.regions = Regions(list(dict.fromkeys(self.options.regions)))
        self.regions.create([self.etcd.client_port, self.postgres.port, self.weed.s3], relay_port)
        for node in self.nodes:
            node.net = self.regions.nets[node.region]
        for i, replica in enumerate(self.replicas):  # an edge in each region in turn
            replica.net = self.regions.nets[self.regions.names[i % len(self.regions.names)]]
        delay = self.options.inter_region_delay_ms
        self.event(f"regions {', '.join(self.regions.names)} in namespaces, {delay:g} ms one-way between them")

    def replica_addresses(self) -> list[tuple[str, int]]:
        """Where the replicas listen, for the front (known once started)."""
        return [(r.host, r.port) for r in self.replicas]

    def region_net(self, region: str) -> RegionNet:
        """A region's namespace (to run a process in it, cut it off, or reach its address);
        only with `Options.netns`, once started."""
        assert self.regions is not None, "the cluster runs without region namespaces"
        return self.regions.nets[region]

    def _upgrade_schema(self, env: dict[str, str]) -> None:
        """`cloche db upgrade`, as an operator runs it before starting servers on a database."""
        done = subprocess.run([sys.executable, "-m", "cloche.cli", "db", "upgrade"], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"cloche db upgrade failed:\n{done.stderr[-2000:]}")
        self.event("database schema up to date")

    def restart_node(self, name: str) -> None:
        """Start node `name` again if it is not running (a test or benchmark killed it)."""
        node = next(n for n in self.nodes if n.name == name)
        if node.crashed():
            node.restart()

    def exits(self) -> list[str]:
        """Processes that exited since the last call, once each."""
        out = []
        for proc in [*self.replicas, *self.nodes]:
            if proc.child is not None and not proc.child.alive() and proc.name not in self._reported:
                self._reported.add(proc.name)
                out.append(f"{proc.name} exited with {proc.child.proc.returncode} (log: {proc.child.log})")
        return out

    def checkpoint_at(self, sandbox_id: str) -> float:
        """When the leader last checkpointed the sandbox (0: never yet), as the servers'
        placements record it: for tests and benchmarks that wait on a checkpoint."""
        if self._placements is None:
            assert self.postgres is not None, "the cluster has not started"
            self._placements = PlacementTable(Store(self.postgres.dsn))
        placed = self._placements.get(sandbox_id)
        return 0.0 if placed is None or placed.checkpoint_at is None else placed.checkpoint_at

    def stop(self) -> None:
        """Stop whatever runs, a tier at a time and each tier's processes at once: the
        servers, then the nodes (their sandboxes per --on-shutdown), then the relay and the
        region namespaces, then S3, PostgreSQL and etcd."""
        if self._placements is not None:
            self._placements.store.close()
        crashed = [n for n in self.nodes if n.crashed()]
        # a node that died left its sandboxes behind: only the node itself, on its data dir, reconciles them
        nodes = [(n.name, n.stop) for n in self.nodes if n not in crashed]
        nodes += [(f"{n.name} (restarted to clean up after its crash)", n.sweep) for n in crashed]
        network: list[tuple[str, Callable[[], None]]] = []
        if self.relay is not None:
            network.append(("the relay between regions", self.relay.kill))
        if self.regions is not None:
            network.append(("the region namespaces", self.regions.remove))
        services: list[tuple[str, Callable[[], None]]] = []
        if self.weed is not None:
            services.append(("SeaweedFS", self.weed.kill))  # what it acknowledged is on disk; its SIGTERM takes 15 s
        if self.postgres is not None:
            services.append(("PostgreSQL", self.postgres.stop))
        if self.etcd is not None:
            services.append(("etcd", self.etcd.shutdown))
        for tier in ([(r.name, r.stop) for r in self.replicas], nodes, network, services):
            with ThreadPoolExecutor(max(1, len(tier)), thread_name_prefix="cluster-stop") as pool:
                for (name, _), failed in zip(tier, pool.map(self._stop_one, tier), strict=True):
                    self.event(f"{name} stopped" if failed is None else f"{name} did not stop cleanly: {failed}")
        self.event("stopped")

    @staticmethod
    def _stop_one(step: tuple[str, Callable[[], None]]) -> Exception | None:
        """Run one stop; its failure, returned: one that fails must not keep the rest running."""
        try:
            step[1]()
        except Exception as e:
            return e
        return None


async def supervise(cluster: LocalCluster, display: Display) -> None:
    """Serve the front on --port, start the cluster, report until SIGINT/SIGTERM, then stop it all."""
    front = Front(cluster.replica_addresses())
    await front.start("127.0.0.1", cluster.options.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: (stopping.set(), cluster.cancelled.set()))
    try:
        await asyncio.to_thread(cluster.start)
        front.backends = cluster.replica_addresses()  # in their regions' namespaces, with --regions
        display.event(f"cluster ready: API on http://127.0.0.1:{front.port}, admin key in {cluster.admin_key}")
        await _report(cluster, display, front.port, stopping)
    except Cancelled:
        pass
    finally:
        display.event("stopping")
        await front.close()
        await asyncio.to_thread(cluster.stop)


async def _report(cluster: LocalCluster, display: Display, port: int, stopping: asyncio.Event) -> None:
    """Every second: processes that exited, and the nodes the API lists."""
    headers = {"Authorization": f"Bearer {cluster.admin_key.read_text().strip()}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=2) as http:
        while not stopping.is_set():
            for message in cluster.exits():
                display.event(message)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                response = await http.get("/v1/nodes")
                if response.status_code == 200:
                    display.nodes(response.json()["items"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
