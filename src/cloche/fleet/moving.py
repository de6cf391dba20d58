"""Which sandboxes are being moved between regions, as every replica sees it.

Why it exists: a move holds the fleet's per-sandbox lock, which only the replica doing
it sees. A request for the sandbox reaching another replica meanwhile would find it
still on its old node and wake it there, in the middle of its hibernation. So the
moving replica marks the move in etcd (`moving/<sandbox id>`, under a lease of its own:
a replica that dies mid-move frees it when the lease ends), every replica watches those
keys, and the fleet holds a request for a sandbox being moved until its key is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from cloche.cluster.etcd import Change, Etcd, EtcdUnavailable

log = logging.getLogger("cloche.fleet.moving")
MOVING = "moving/"  # etcd: /cloche/moving/<sandbox id> while it moves
LEASE_TTL_S = 10  # a replica that dies mid-move holds its sandbox's requests this long at most
MAX_WAIT_S = 600.0  # a request waits this long at most for a move (a 100 MB one takes seconds)
RETRY_S = 0.5


class Moving:
    """The moves in progress; `await start()` before use, `close()` after."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._moving: dict[str, asyncio.Event] = {}  # sandbox id -> set when its move ends
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        revision = await self._relist()
        self._task = asyncio.create_task(self._watch(revision), name="fleet-moving")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def active(self, sandbox_id: str) -> bool:
        """Whether the sandbox is being moved now (as this replica last heard)."""
        return sandbox_id in self._moving

    async def wait(self, sandbox_id: str) -> None:
        """Return once the sandbox is not being moved (at once, if it is not)."""
        ended = self._moving.get(sandbox_id)
        if ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), MAX_WAIT_S)

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str) -> AsyncIterator[None]:
        """Mark the sandbox as moving, for every replica, while the block runs (after the
        move another replica may be making of it)."""
        lease, ttl = await self.etcd.grant(LEASE_TTL_S)

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                with contextlib.suppress(EtcdUnavailable, TimeoutError):
                    await self.etcd.keepalive(lease)

        renewing = asyncio.create_task(renew(), name=f"moving-{sandbox_id}")
        try:
            while not (await self.etcd.create(MOVING + sandbox_id, b"", lease=lease))[0]:
                self._moving.setdefault(sandbox_id, asyncio.Event())
                await self.wait(sandbox_id)
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(EtcdUnavailable, TimeoutError):
                await self.etcd.revoke(lease)  # deletes the key: the others' watch says so
            self._ended(sandbox_id)  # this replica knows now, whatever its watch says

    def _ended(self, sandbox_id: str) -> None:
        ended = self._moving.pop(sandbox_id, None)
        if ended is not None:
            ended.set()

    async def _relist(self) -> int:
        entries, revision = await self.etcd.list(MOVING)
        now = {e.key[len(MOVING) :] for e in entries}
        for sandbox_id in set(self._moving) - now:
            self._ended(sandbox_id)
        for sandbox_id in now:
            self._moving.setdefault(sandbox_id, asyncio.Event())
        return revision

    async def _watch(self, revision: int) -> None:
        await self.etcd.follow(MOVING, revision, self._apply, self._relist, RETRY_S)

    async def _apply(self, change: Change) -> None:
        sandbox_id = change.entry.key[len(MOVING) :]
        if change.deleted:
            self._ended(sandbox_id)
        else:
            self._moving.setdefault(sandbox_id, asyncio.Event())
