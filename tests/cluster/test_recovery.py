"""Etcd restarts without an operator: after a quick restart and after a longer outage the
nodes are registered again, the watchers see them, a leader is elected again and claims
work, all on their own."""

from __future__ import annotations

import asyncio
import contextlib

from cloche.cluster.claims import claim
from cloche.cluster.election import Election
from cloche.cluster.etcd import Etcd
from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.membership import NodeInfo, NodeRegistration, NodeWatcher
from tests.cluster.timing import MARGIN, TTL

INFO = NodeInfo(address="https://n.test:7070", capacity=10)


def test_clients_recover_after_etcd_restarts(private_etcd: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        fences = 0

        async def stop_serving() -> None:
            nonlocal fences
            fences += 1

        async with Etcd(private_etcd.endpoint, prefix=prefix) as etcd, NodeWatcher(etcd) as watcher, \
                NodeRegistration(etcd, "n1", INFO, ttl=TTL, margin=MARGIN, on_fenced=stop_serving) as reg:  # fmt: skip
            election = Election(etcd, "scheduler", "s1", ttl=TTL, margin=MARGIN)
            term = await asyncio.wait_for(election.campaign(), 5)
            await watcher.wait_for(lambda nodes: "n1" in nodes, timeout=5)

            for outage in (0.0, TTL + 0.5):  # a quick restart, then one longer than a lease
                fenced_before = fences
                await asyncio.to_thread(private_etcd.stop)
                await asyncio.sleep(outage)
                await asyncio.to_thread(private_etcd.start)
                await asyncio.wait_for(reg.registered.wait(), 10)
                await asyncio.sleep(0.5)
                await asyncio.wait_for(reg.registered.wait(), 10)
                assert reg.session is not None
                load = int(outage * 10) + 1
                await reg.update(load=load)
                await watcher.wait_for(lambda nodes, load=load: "n1" in nodes and nodes["n1"].load == load, timeout=10)
                held = await claim(etcd, reg.session, "chat", f"k{load}", "n1")
                assert held.node == "n1"
                if term.lost.is_set():  # the outage ended the term: campaign again
                    term = await asyncio.wait_for(election.campaign(), 10)
                assert await election.leader() == "s1"
                if outage > TTL:
                    assert fences == fenced_before + 1, "an outage longer than a lease fences the node, once"
            with contextlib.suppress(Exception):
                await election.resign()

    asyncio.run(main())
