"""A lease kept alive, and the self-fencing clock that goes with it.

Everything a node or a server replica holds in etcd (its registration, its claims on agent
instances, its leadership) hangs off one lease. If the holder cannot renew that lease, etcd
deletes the keys when it expires and another node may claim the same instance, so the
holder must have stopped serving *before* that moment. This module is that guarantee.

The arithmetic. A keep-alive sent at local time `t_send` reaches the etcd leader no
earlier than `t_send`, and the leader sets the lease's expiry to (its receipt time + TTL).
So, however late the request or its answer travels, etcd cannot expire the lease before
`t_send + TTL` as measured by etcd's clock. Etcd measures with a monotonic clock, and so do
we; two monotonic clocks drift apart by at most a rate `rho` (crystal drift, ~1e-4; we
budget far more), so in our time the earliest expiry is `t_send + TTL * (1 - rho)`. The
session therefore declares itself **fenced** at

    fence_at = t_send(last successful keep-alive) + TTL - margin

and fires the fencing callbacks, which stop serving. It is safe when

    margin >= stop_time + rho * TTL + scheduling lag

where `stop_time` is how long the callbacks take to stop serving. The defaults (TTL 10 s,
margin 3 s) budget 2 s to stop serving and 1 s for drift and a stalled event loop; the tests
use TTL 2 s (etcd's minimum with default election timing) and a 0.8 s margin. Keep-alives
go out every (TTL - margin) / 3, so two may fail before the session fences. A session that
has fenced is finished: its holder opens a new one and claims again, with new fencing
tokens. Etcd only ever expires a lease later than planned (a new etcd leader extends every
lease by its TTL), which errs on the safe side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cloche.cluster.etcd import Etcd, EtcdUnavailable

log = logging.getLogger(__name__)

DEFAULT_TTL = 10
DEFAULT_MARGIN = 3.0
RETRY_INTERVAL = 0.2
"""How soon a failed keep-alive is retried: well inside the margin."""

FenceCallback = Callable[[], Awaitable[None]]


class Fenced(Exception):
    """The session's lease could not be renewed in time: its holder no longer owns anything."""


class Session:
    """One lease on `etcd`, renewed in the background until `close()` or until it fences."""

    def __init__(self, etcd: Etcd, *, ttl: int = DEFAULT_TTL, margin: float = DEFAULT_MARGIN) -> None:
        if not 0 < margin < ttl:
            raise ValueError(f"the fencing margin ({margin} s) must be between 0 and the TTL ({ttl} s)")
        self.etcd = etcd
        self.ttl = ttl
        self.margin = margin
        self.lease = 0
        self.fenced = asyncio.Event()
        self.fence_at = 0.0
        self._renewed_at = 0.0
        self._callbacks: list[FenceCallback] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return (self.ttl - self.margin) / 3

    def on_fenced(self, callback: FenceCallback) -> None:
        """Call `callback` (and await it) the moment the session fences."""
        self._callbacks.append(callback)

    def check(self) -> None:
        """Raise `Fenced` unless the session is still safe to act under."""
        if self.fenced.is_set() or asyncio.get_running_loop().time() >= self.fence_at:
            raise Fenced(f"lease {self.lease:x} is fenced")

    async def open(self) -> Session:
        t_send = asyncio.get_running_loop().time()
        self.lease, self.ttl = await self.etcd.grant(self.ttl)
        self._renewed(t_send, self.ttl)
        self._task = asyncio.create_task(self._keep_alive(), name=f"etcd-lease-{self.lease:x}")
        return self

    async def close(self) -> None:
        """Stop renewing and revoke the lease, deleting every key under it at once (so
        whoever waits for them, a follower or a claimant, needs not wait for expiry).
        Best effort: if etcd cannot be reached the lease simply expires."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.fenced.set()
        if self.lease:
            with contextlib.suppress(EtcdUnavailable, TimeoutError):
                await asyncio.wait_for(self.etcd.revoke(self.lease), self.etcd.timeout)

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _renewed(self, t_send: float, ttl: int) -> None:
        self._renewed_at = t_send
        self.fence_at = t_send + ttl - self.margin

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        next_try = self._renewed_at + self.interval
        while True:
            now = loop.time()
            if now >= self.fence_at:
                return await self._fence(f"not renewed for {now - self._renewed_at:.2f} s")
            if now < next_try:
                await asyncio.sleep(min(next_try, self.fence_at) - now)
                continue
            try:
                ttl = await asyncio.wait_for(self.etcd.keepalive(self.lease), self.fence_at - now)
            except (EtcdUnavailable, TimeoutError) as e:
                log.warning("lease %x: keep-alive failed (%s); fencing in %.2f s", self.lease, e, self.fence_at - now)
                next_try = loop.time() + RETRY_INTERVAL
                continue
            if ttl <= 0:
                return await self._fence("etcd says the lease has expired")
            self._renewed(now, ttl)
            next_try = now + self.interval

    async def _fence(self, why: str) -> None:
        log.error("lease %x fenced: %s; stopping everything held under it", self.lease, why)
        self.fenced.set()
        for callback in self._callbacks:
            try:
                await callback()
            except Exception:
                log.exception("lease %x: a fencing callback failed", self.lease)
