"""Measured round trips between regions, for latency-aware placement: the control plane
should place by what the network really does, not by a table someone typed in.

Every CLOCHE_RTT_PROBE_INTERVAL_S each node times `GET /healthz` on one node of every
region, its own included (another node there if it has one, else itself), over a kept
connection so the figure is one request's round trip, not a TLS handshake. It takes the
median of a few and publishes it as `rtt/<its region>/<that region>` in etcd under its
own lease: a node that dies or is cut off stops vouching for its figures with its lease.
Several nodes of one region write the same key; the freshest wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import statistics
import time
from pathlib import Path

import httpx

from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.membership import NODES, NodeInfo, NodeRegistration
from cloche.nodeapi.auth import HEALTHZ

log = logging.getLogger("cloche.probes")
RTT = "rtt/"  # etcd: rtt/<from region>/<to region> -> {"ms", "node", "target", "at"}
SAMPLES = 5


def rtt_key(source: str, target: str) -> str:
    return f"{RTT}{source}/{target}"


def targets(nodes: dict[str, NodeInfo], me: str) -> dict[str, NodeInfo]:
    """One node per region to probe: the first other node of the region by id, else this one."""
    picked: dict[str, NodeInfo] = {}
    for node_id in sorted(nodes, key=lambda n: (n == me, n)):  # this node last: any other goes first
        picked.setdefault(nodes[node_id].region, nodes[node_id])
    return picked


class RttProber:
    """Times the round trip from this node to each region and publishes it (see module doc)."""

    def __init__(self, etcd: Etcd, registration: NodeRegistration, ca: Path, interval_s: float) -> None:
        self.etcd = etcd
        self.registration = registration
        self.interval_s = interval_s
        self._tls = ssl.create_default_context(cafile=str(ca))
        self._clients: dict[str, httpx.AsyncClient] = {}  # node address -> a kept connection
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RttProber:
        self._task = asyncio.create_task(self._run(), name="rtt-prober")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self._clients.values():
            await client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_once()
            except (EtcdUnavailable, TimeoutError) as e:
                log.info("round-trip probes skipped this round: %s", e)
            await asyncio.sleep(self.interval_s)

    async def probe_once(self) -> dict[str, float]:
        """One round: the median round trip (ms) to each region it could reach, published."""
        entries, _ = await self.etcd.list(NODES)
        nodes = {e.key[len(NODES) :]: NodeInfo.from_json(e.value) for e in entries}
        measured = {}
        picked = targets(nodes, self.registration.node_id)
        for address in {a for a in self._clients if a not in {n.address for n in picked.values()}}:
            await self._clients.pop(address).aclose()  # a node no longer probed
        for region, node in picked.items():
            try:
                measured[region] = await self.measure(node.address)
            except httpx.HTTPError as e:
                log.info("round trip to %s (%s) not measured: %s", region, node.address, e)
                continue
            await self._publish(region, node, measured[region])
        return measured

    async def measure(self, address: str) -> float:
        """The median of SAMPLES timed `GET /healthz` to `address`, after one to connect."""
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = httpx.AsyncClient(base_url=address, verify=self._tls, timeout=5)
        (await client.get(HEALTHZ)).raise_for_status()
        times = []
        for _ in range(SAMPLES):
            start = time.perf_counter()
            (await client.get(HEALTHZ)).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    async def _publish(self, region: str, node: NodeInfo, ms: float) -> None:
        session = self.registration.session
        if session is None or not self.registration.registered.is_set():
            return
        doc = {"ms": round(ms, 3), "node": self.registration.node_id, "target": node.address, "at": time.time()}
        await self.etcd.put(rtt_key(self.registration.info.region, region), json.dumps(doc).encode(),
                            lease=session.lease)  # fmt: skip
