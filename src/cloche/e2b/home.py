"""Which server replica is a sandbox's envd home, in cluster mode.

Why it exists: the E2B layer keeps a sandbox's envd processes, code-interpreter kernels
and file watchers in the memory of the replica that started them (`e2b.state.E2bState`),
so every in-sandbox request of a sandbox must reach that one replica, as E2B's own
client-proxy gives a sandbox affinity to its envd. The first replica that serves such a
request claims `envd/<sandbox id>` in etcd (create-if-absent, under its session lease,
valued with its advertised URL); the others forward to it (`server.affinity`). When the
home dies its lease lapses, the key goes, and the next request claims a new home (the
processes died with the old one, as envd's die with a restarted envd). When the sandbox
stops (its processes end with it), its home gives the claim up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cloche.cluster.etcd import Entry, Etcd, EtcdUnavailable
from cloche.cluster.session import Fenced, Session

log = logging.getLogger(__name__)

PREFIX = "envd/"
POLL_S = 0.2


@dataclass(frozen=True)
class Home:
    """A sandbox's home: `url` is the replica's; `mine` when it is this replica."""

    url: str
    mine: bool
    create_revision: int


class Homes:
    """This replica's view of the homes: it claims under one session (reopened after it
    fences, when every claim under it is lost) and remembers the claims it holds, so a
    request at the home costs no etcd round trip."""

    def __init__(self, etcd: Etcd, url: str, *, ttl: int, margin: float) -> None:
        self.etcd = etcd
        self.url = url
        self.ttl = ttl
        self.margin = margin
        self._session: Session | None = None
        self._held: dict[str, int] = {}  # sandbox id: create revision, under the current session
        self._lock = asyncio.Lock()

    async def _current(self) -> Session:
        async with self._lock:
            try:
                if self._session is not None:
                    self._session.check()
                    return self._session
            except Fenced:
                await self._session.close()
            self._held.clear()
            self._session = await Session(self.etcd, ttl=self.ttl, margin=self.margin).open()
            return self._session

    async def home(self, sandbox_id: str) -> Home:
        """The sandbox's home, claimed by this replica if it has none."""
        session = await self._current()
        if (revision := self._held.get(sandbox_id)) is not None:
            return Home(self.url, True, revision)
        key = PREFIX + sandbox_id
        created, entry = await self.etcd.create(key, self.url.encode(), lease=session.lease)
        if not created and entry.lease != session.lease and entry.value.decode() == self.url:
            # this replica's claim from before it restarted: that process, and its processes, are gone
            await self.etcd.delete_if(key, entry.create_revision)
            created, entry = await self.etcd.create(key, self.url.encode(), lease=session.lease)
        mine = entry.lease == session.lease
        if mine:
            session.check()  # the lease may have fenced while the transaction was in flight
            self._held[sandbox_id] = entry.create_revision
        return Home(entry.value.decode(), mine, entry.create_revision)

    async def vacated(self, sandbox_id: str, home: Home) -> bool:
        """Wait until the claim `home` is gone (its replica does not answer: once its lease
        expires etcd deletes the key); False if it still stands after a lease's time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ttl + 1
        log.warning("envd home %s of %s does not answer; waiting for its claim to lapse", home.url, sandbox_id)
        while loop.time() < deadline:
            entry: Entry | None = await self.etcd.get(PREFIX + sandbox_id)
            if entry is None or entry.create_revision != home.create_revision:
                return True
            await asyncio.sleep(POLL_S)
        return False

    async def release(self, sandbox_id: str) -> None:
        """The sandbox stopped, and its envd processes with it: give its home up (if this
        replica holds it), so etcd keeps no key for a sandbox that may never come back."""
        revision = self._held.pop(sandbox_id, None)
        if revision is not None:
            try:
                await self.etcd.delete_if(PREFIX + sandbox_id, revision)
            except (EtcdUnavailable, TimeoutError) as exc:  # it goes with this replica's lease
                log.warning("envd home of %s not released (%s)", sandbox_id, exc)

    async def close(self) -> None:
        """Give every claim up at once (revoking the lease deletes them)."""
        if self._session is not None:
            await self._session.close()
