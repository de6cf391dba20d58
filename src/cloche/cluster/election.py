"""Leader election among server replicas, for the work only one may do at a time (the
scheduler, the reapers). A candidate becomes leader by creating `/cloche/election/<name>`
under its own lease; the others watch that key and try again the moment it is deleted,
which happens at once when the leader resigns (clean shutdown revokes its lease) and at
lease expiry when it dies. The leader's term ends when its session fences, i.e. before
its lease can expire and a successor be elected, so two leaders never act at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.session import DEFAULT_MARGIN, DEFAULT_TTL, Session

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.3


@dataclass(frozen=True)
class Term:
    """One stretch of leadership. `token` grows with every term (a fencing token for the
    leader's own writes); `lost` is set when the term ends."""

    leader: str
    token: int
    lost: asyncio.Event


class Election:
    """Campaign as `candidate` for the leadership called `name` (e.g. "scheduler")."""

    def __init__(self, etcd: Etcd, name: str, candidate: str, *, ttl: int = DEFAULT_TTL,
                 margin: float = DEFAULT_MARGIN) -> None:  # fmt: skip
        self.etcd = etcd
        self.key = f"election/{name}"
        self.candidate = candidate
        self.ttl = ttl
        self.margin = margin
        self.term: Term | None = None
        self._session: Session | None = None

    async def leader(self) -> str | None:
        """Who leads now, as etcd says."""
        entry = await self.etcd.get(self.key)
        return None if entry is None else entry.value.decode()

    async def campaign(self) -> Term:
        """Wait until elected. The term ends (`term.lost`) when the session fences."""
        while True:
            try:
                if self._session is None or self._session.fenced.is_set():
                    if self._session is not None:  # revoke it, or our old key blocks every election
                        await self._session.close()
                    self._session = await Session(self.etcd, ttl=self.ttl, margin=self.margin).open()
                created, entry = await self.etcd.create(self.key, self.candidate.encode(), lease=self._session.lease)
                if created:
                    return self._begin(self._session, entry.create_revision)
                await self._await_vacancy(entry.mod_revision)
            except (EtcdUnavailable, TimeoutError) as e:
                log.warning("%s: campaign for %s interrupted (%s)", self.candidate, self.key, e)
                await asyncio.sleep(RETRY_INTERVAL)

    async def resign(self) -> None:
        """Step down: revoking the lease deletes the key, and a follower is elected at once."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.term is not None:
            self.term.lost.set()

    async def run(self, work: Callable[[Term], Awaitable[None]]) -> None:
        """Lead whenever elected: run `work(term)` while leader, cancel it the moment the
        term ends, and campaign again; forever, until cancelled (then resign)."""
        try:
            while True:
                term = await self.campaign()
                task = asyncio.create_task(work(term))
                lost = asyncio.create_task(term.lost.wait())
                await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
                for t in (task, lost):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                if not task.cancelled():  # work finished (or failed) on its own
                    return task.result()
        finally:
            await self.resign()

    def _begin(self, session: Session, token: int) -> Term:
        term = Term(self.candidate, token, asyncio.Event())

        async def end() -> None:
            log.error("%s: lost leadership of %s (lease fenced)", self.candidate, self.key)
            term.lost.set()

        session.on_fenced(end)
        self.term = term
        return term

    async def _await_vacancy(self, revision: int) -> None:
        """Return when the key is deleted, or after one TTL (then the caller simply tries
        again, which also covers a watch that broke)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ttl):
                async for change in self.etcd.watch(self.key, revision + 1):
                    if change.deleted and change.entry.key == self.key:
                        return
