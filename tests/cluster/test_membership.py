"""Node membership on a real etcd: a node's registration is seen with its labels, load
updates reach the watchers, and a node that dies is reported lost once its lease expires
(and not before a clean leave is reported at once)."""

from __future__ import annotations

import asyncio
import time

from cloche.cluster.etcd import Etcd
from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.membership import NodeEvent, NodeInfo, NodeRegistration, NodeWatcher
from tests.cluster.procs import Member
from tests.cluster.timing import MARGIN, TTL

INFO = NodeInfo(address="https://n1.test:7070", capacity=100, region="eu-west", zone="a",
                isolation=("runc", "gvisor"), version="0.9.0")  # fmt: skip


async def next_event(events: object, timeout: float = 10.0) -> NodeEvent:
    return await asyncio.wait_for(anext(events), timeout)  # type: ignore[call-overload]


def test_registration_is_seen_with_labels_and_load_updates(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd, NodeWatcher(etcd) as watcher:
            events = watcher.events()
            async with NodeRegistration(etcd, "n1", INFO, ttl=TTL, margin=MARGIN) as reg:
                joined = await next_event(events)
                assert (joined.kind, joined.node_id, joined.info) == ("joined", "n1", INFO)
                raw = await etcd.get("nodes/n1")
                assert raw is not None and raw.lease == reg.session.lease
                await reg.update(load=42)
                updated = await next_event(events)
                assert (updated.kind, updated.info.load, updated.info.region) == ("updated", 42, "eu-west")
                assert watcher.nodes["n1"].load == 42
            # a clean leave revokes the lease: reported at once, not after a TTL
            t0 = time.monotonic()
            left = await next_event(events)
            assert (left.kind, left.node_id) == ("lost", "n1")
            assert time.monotonic() - t0 < 1.0
            assert await etcd.get("nodes/n1") is None

    asyncio.run(main())


def test_a_watcher_started_late_sees_the_live_set(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with (
            Etcd(etcd_server.endpoint, prefix=prefix) as etcd,
            NodeRegistration(etcd, "a", INFO, ttl=TTL, margin=MARGIN),
            NodeRegistration(etcd, "b", INFO, ttl=TTL, margin=MARGIN),
            NodeWatcher(etcd) as watcher,
        ):
            assert set(watcher.nodes) == {"a", "b"}
            kinds = {(e.kind, e.node_id) for e in [await next_event(watcher.events()) for _ in range(2)]}
            assert kinds == {("joined", "a"), ("joined", "b")}

    asyncio.run(main())


def test_a_killed_node_is_lost_when_its_lease_expires(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd, NodeWatcher(etcd) as watcher:
            node = await Member.start(etcd_server.endpoint, prefix, "node", "crashy")
            try:
                assert await node.line() == ["registered", "crashy"]
                await watcher.wait_for(lambda nodes: "crashy" in nodes, timeout=5)
                node.kill()
                killed = time.monotonic()
                await watcher.wait_for(lambda nodes: "crashy" not in nodes, timeout=TTL + 3)
                lost_after = time.monotonic() - killed
            finally:
                await node.reap()
            # not before the lease could expire (it was renewed at most (TTL - MARGIN) / 3
            # before the kill), and not much after: etcd checks expiry every 0.5 s
            assert TTL - (TTL - MARGIN) / 3 - 0.1 <= lost_after <= TTL + 1.5

    asyncio.run(main())
