"""Self-fencing on a real etcd: a node that cannot renew its lease, because etcd froze
(SIGSTOP) or because its own link to etcd was cut, stops serving its instances before
its lease can expire; another node gets the instance only after that expiry; and at no
moment do two nodes serve the same key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from cloche.cluster.claims import InstanceHeld, claim
from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.membership import NodeInfo, NodeRegistration
from cloche.cluster.session import Session
from tests.cluster.history import History
from tests.cluster.relay import Relay
from tests.cluster.timing import MARGIN, TTL

INFO = NodeInfo(address="https://n.test:7070", capacity=10)


async def claim_when_free(etcd: Etcd, session: Session, node: str, history: History) -> float:
    """Node B: try for the instance until it is free, then serve it; returns when it won."""
    while True:
        with contextlib.suppress(InstanceHeld, EtcdUnavailable, TimeoutError):
            await asyncio.wait_for(claim(etcd, session, "chat", "k", node), 1.0)
            history.record(node, True)
            return time.monotonic()
        await asyncio.sleep(0.05)


async def partition_scenario(server: EtcdServer, a_endpoint: str, prefix: str,
                             break_a: Callable[[], Awaitable[None]],
                             heal: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    history = History()
    fenced_at: list[float] = []

    async def stop_serving() -> None:
        fenced_at.append(time.monotonic())
        history.record("a", False)

    async with (
        Etcd(a_endpoint, prefix=prefix) as etcd_a,
        Etcd(server.endpoint, prefix=prefix) as etcd_b,
        NodeRegistration(etcd_a, "a", INFO, ttl=TTL, margin=MARGIN, on_fenced=stop_serving) as reg_a,
        Session(etcd_b, ttl=TTL * 3, margin=MARGIN) as session_b,
    ):
        first = reg_a.session
        assert first is not None
        await claim(etcd_a, first, "chat", "k", "a")
        history.record("a", True)
        await asyncio.sleep(0.5)

        broken = time.monotonic()
        await break_a()
        b_task = asyncio.create_task(claim_when_free(etcd_b, session_b, "b", history))
        await asyncio.sleep(TTL + 1.0)  # long enough for A's lease to expire
        await heal()
        b_won = await asyncio.wait_for(b_task, 30)  # a thawed etcd may elect itself again first, extending leases

        assert fenced_at, "node A never declared itself fenced"
        assert fenced_at[0] - broken <= TTL - MARGIN + 0.5, "A fences within TTL - margin of its last renewal"
        earliest_expiry = first.fence_at + MARGIN  # last renewal sent + TTL
        assert fenced_at[0] < earliest_expiry - MARGIN / 2, "A stopped well before its lease could expire"
        assert b_won >= earliest_expiry, "B got the instance only once A's lease had expired"
        assert history.overlaps() == [], f"two nodes served one key: {history.events}"

        # A recovers on its own: registered again under a new lease, with no claims
        await asyncio.wait_for(reg_a.registered.wait(), 10)
        assert reg_a.session is not first and reg_a.session is not None
        assert (await etcd_b.get("nodes/a")) is not None
        with pytest.raises(InstanceHeld):
            await claim(etcd_a, reg_a.session, "chat", "k", "a")


def test_frozen_etcd_fences_the_node_before_its_lease_expires(private_etcd: EtcdServer, prefix: str) -> None:
    async def freeze() -> None:
        private_etcd.pause()

    async def thaw() -> None:
        private_etcd.resume()

    asyncio.run(partition_scenario(private_etcd, private_etcd.endpoint, prefix, freeze, thaw))


def test_a_node_cut_off_from_etcd_fences_itself(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        relay = await Relay(etcd_server.endpoint).start()
        try:
            await partition_scenario(etcd_server, relay.endpoint, prefix, relay.cut, relay.mend)
        finally:
            await relay.cut()

    asyncio.run(main())
