"""Leader election among real processes on a real etcd: exactly one of three contenders
leads; when the leader is killed another takes over within the lease TTL, when it shuts
down cleanly another takes over at once; and a leader cut off from etcd learns that its
term ended before a successor is elected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from cloche.cluster.election import Election, Term
from cloche.cluster.etcd import Etcd
from cloche.cluster.local.etcd import EtcdServer
from tests.cluster.history import History
from tests.cluster.procs import Member
from tests.cluster.relay import Relay
from tests.cluster.timing import MARGIN, TTL


@contextlib.asynccontextmanager
async def contenders(etcd_server: EtcdServer, prefix: str, n: int) -> AsyncIterator[list[Member]]:
    """`n` contender processes, all reaped on the way out."""
    members: list[Member] = []
    try:
        for i in range(n):
            members.append(await Member.start(etcd_server.endpoint, prefix, "elect", f"c{i}"))
        yield members
    finally:
        for m in members:
            await m.reap()


async def leader_line(members: list[Member], timeout: float) -> tuple[Member, list[str]]:
    """The first "leader" line from any of `members`."""
    reads = {asyncio.create_task(m.line(timeout)): m for m in members}
    done, pending = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    task = done.pop()
    return reads[task], task.result()


def test_three_contenders_one_leader_and_takeover_after_a_crash(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with contenders(etcd_server, prefix, 3) as members, Etcd(etcd_server.endpoint, prefix=prefix) as etcd:
            first, said = await leader_line(members, 20)
            assert said[:2] == ["leader", f"c{members.index(first)}"]
            await asyncio.sleep(1.0)  # the others keep campaigning, and lose
            followers = [m for m in members if m is not first]
            assert await Election(etcd, "scheduler", "observer").leader() == said[1]

            first.kill()
            killed = time.monotonic()
            second, said2 = await leader_line(followers, TTL + 5)
            took = time.monotonic() - killed
            assert said2[0] == "leader" and said2[1] != said[1]
            assert int(said2[2]) > int(said[2]), "each term has a larger token"
            assert took <= TTL + 1.5, f"takeover took {took:.2f} s"
            # the remaining follower did not also become leader
            third = next(m for m in followers if m is not second)
            try:
                extra = await third.line(timeout=1.0)
            except TimeoutError:
                extra = []
            assert extra == []

    asyncio.run(main())


def test_a_clean_shutdown_hands_over_at_once(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with contenders(etcd_server, prefix, 2) as members:
            first, said = await leader_line(members, 20)
            other = next(m for m in members if m is not first)
            await asyncio.sleep(0.5)
            first.terminate()
            stopped = time.monotonic()
            said2 = await other.line(TTL + 5)
            assert said2[0] == "leader" and said2[1] != said[1]
            assert time.monotonic() - stopped < 1.0, "a resignation must not wait for the lease to expire"
            assert (await first.line())[0] == "resigned"

    asyncio.run(main())


def test_a_partitioned_leader_stops_acting_before_a_successor_starts(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        history = History()
        relay = await Relay(etcd_server.endpoint).start()

        def work(name: str):  # noqa: ANN202
            async def lead(term: Term) -> None:
                history.record(name, True)
                try:
                    await asyncio.Event().wait()
                finally:
                    history.record(name, False)

            return lead

        async with Etcd(relay.endpoint, prefix=prefix) as cut_off, Etcd(etcd_server.endpoint, prefix=prefix) as ok:
            a = Election(cut_off, "reaper", "a", ttl=TTL, margin=MARGIN)
            b = Election(ok, "reaper", "b", ttl=TTL, margin=MARGIN)
            run_a = asyncio.create_task(a.run(work("a")))
            await asyncio.sleep(1.0)
            run_b = asyncio.create_task(b.run(work("b")))
            await asyncio.sleep(0.5)
            assert await b.leader() == "a"
            await relay.cut()
            for _ in range(100):
                if any(h == "b" for _, h, _ in history.events):
                    break
                await asyncio.sleep(0.1)
            assert history.overlaps() == []
            assert history.first("a", False) < history.first("b", True)
            for t in (run_a, run_b):
                t.cancel()
            await asyncio.gather(run_a, run_b, return_exceptions=True)
        await relay.cut()

    asyncio.run(main())
