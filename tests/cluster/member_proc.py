"""A cluster member in a process of its own, for tests that kill one with SIGKILL (a crash
leaves no chance to revoke a lease) or stop it with SIGTERM (a clean shutdown does):

    python -m tests.cluster.member_proc ENDPOINT PREFIX node ID     # register as a node
    python -m tests.cluster.member_proc ENDPOINT PREFIX elect ID    # campaign to lead

It prints one line per step ("registered ID", "leader ID TOKEN") for the test to read.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from cloche.cluster.election import Election, Term
from cloche.cluster.etcd import Etcd
from cloche.cluster.membership import NodeInfo, NodeRegistration
from tests.cluster.timing import MARGIN, TTL


def say(*words: object) -> None:
    print(*words, flush=True)


async def main(endpoint: str, prefix: str, role: str, ident: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Etcd(endpoint, prefix=prefix) as etcd:
        if role == "node":
            info = NodeInfo(address=f"http://{ident}.test:7070", capacity=10, region="eu")
            async with NodeRegistration(etcd, ident, info, ttl=TTL, margin=MARGIN):
                say("registered", ident)
                await stop.wait()
            return

        async def lead(term: Term) -> None:
            say("leader", ident, term.token)
            await asyncio.Event().wait()

        election = Election(etcd, "scheduler", ident, ttl=TTL, margin=MARGIN)
        work = asyncio.create_task(election.run(lead))
        await stop.wait()
        work.cancel()  # Election.run resigns on its way out
        await asyncio.gather(work, return_exceptions=True)
        say("resigned", ident)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
