"""One instance per key on a real etcd: of many nodes racing for a key exactly one wins
and the others learn who; fencing tokens grow across release, re-claim and expiry."""

from __future__ import annotations

import asyncio

import pytest

from cloche.cluster.claims import Claim, InstanceHeld, claim, holder, release
from cloche.cluster.etcd import Etcd
from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.session import Fenced, Session
from tests.cluster.timing import MARGIN, TTL


def test_many_racing_claimants_exactly_one_wins(etcd_server: EtcdServer, prefix: str) -> None:
    async def contend(node: str, start: asyncio.Event) -> Claim | InstanceHeld:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd, Session(etcd, ttl=TTL, margin=MARGIN) as s:
            await etcd.get("warm-up")  # connect before the start line
            await start.wait()
            try:
                won = await claim(etcd, s, "chat", "user/42", node)
            except InstanceHeld as e:
                return e
            await asyncio.sleep(0.5)  # hold it until every loser has tried
            return won

    async def main() -> None:
        start = asyncio.Event()
        racers = [asyncio.create_task(contend(f"n{i}", start)) for i in range(24)]
        await asyncio.sleep(1.0)
        start.set()
        results = await asyncio.gather(*racers)
        winners = [r for r in results if isinstance(r, Claim)]
        assert len(winners) == 1
        won = winners[0]
        losers = [r for r in results if isinstance(r, InstanceHeld)]
        assert len(losers) == 23
        assert {e.holder for e in losers} == {won}, "every loser is told who holds the key, with its token"

    asyncio.run(main())


def test_fencing_tokens_grow_across_release_reclaim_and_expiry(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd:
            async with Session(etcd, ttl=TTL, margin=MARGIN) as s1, Session(etcd, ttl=TTL, margin=MARGIN) as s2:
                first = await claim(etcd, s1, "chat", "k", "n1")
                assert await holder(etcd, "chat", "k") == first
                with pytest.raises(InstanceHeld) as held:
                    await claim(etcd, s2, "chat", "k", "n2")
                assert held.value.holder.node == "n1"
                await etcd.put("unrelated", b"x")  # other writes move the revision on meanwhile
                assert await release(etcd, first)
                assert not await release(etcd, first), "a released claim cannot be released twice"
                assert await holder(etcd, "chat", "k") is None
                second = await claim(etcd, s2, "chat", "k", "n2")
                assert second.token > first.token
                assert not await release(etcd, first), "an old claim cannot release a newer holder's"
                assert await holder(etcd, "chat", "k") == second
            # closing s2 revoked its lease, so the key is free again
            async with Session(etcd, ttl=TTL, margin=MARGIN) as s3:
                third = await claim(etcd, s3, "chat", "k", "n3")
                assert third.token > second.token
                # the same key name in another app is another instance
                other = await claim(etcd, s3, "mail", "k", "n3")
                assert other.app == "mail" and other.token > third.token

    asyncio.run(main())


def test_a_retried_claim_whose_answer_was_lost_is_still_the_claimants(etcd_server: EtcdServer, prefix: str) -> None:
    """A deadline can fire after etcd committed the claim; the retry must not find the
    instance "held" by its own claimant, or the key stays locked while the lease lives."""

    async def main() -> None:
        async with (
            Etcd(etcd_server.endpoint, prefix=prefix) as etcd,
            Session(etcd, ttl=TTL, margin=MARGIN) as s1,
            Session(etcd, ttl=TTL, margin=MARGIN) as s2,
        ):
            first = await claim(etcd, s1, "chat", "k", "n1")
            assert await claim(etcd, s1, "chat", "k", "n1") == first, "same session, same node: the same claim"
            with pytest.raises(InstanceHeld):
                await claim(etcd, s1, "chat", "k", "n2")  # another node sharing a lease is not the holder
            with pytest.raises(InstanceHeld):
                await claim(etcd, s2, "chat", "k", "n1")  # nor is the same node under an older or newer lease

    asyncio.run(main())


def test_a_fenced_session_cannot_claim(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd:
            s = await Session(etcd, ttl=TTL, margin=MARGIN).open()
            await s.close()
            with pytest.raises(Fenced):
                await claim(etcd, s, "chat", "k", "n1")

    asyncio.run(main())
