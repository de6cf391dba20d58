"""The one way cloche talks to etcd: an aetcd client with short per-call deadlines, fast
reconnects and cloche's key prefix, so every coordination module gets the same failure
behaviour (a hung or restarting etcd surfaces as `EtcdUnavailable` within the deadline,
and the channel reconnects on its own within a second of etcd coming back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aetcd
import aetcd.exceptions
import aetcd.utils

# gRPC's default reconnect backoff grows to two minutes; a cluster must notice a
# restarted etcd within a lease TTL, so it retries at least every second.
CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}

log = logging.getLogger(__name__)

EtcdUnavailable = aetcd.exceptions.ClientError
"""Raised by any etcd call that fails: etcd unreachable, too slow for the deadline, or refusing."""


@dataclass(frozen=True)
class Entry:
    """One key as etcd holds it; revisions are etcd's cluster-wide, monotonic counters."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Change:
    """One watch event: `entry` is the key after a put, or as it was before a delete."""

    deleted: bool
    entry: Entry
    revision: int


def _entry(kv: aetcd.rtypes.KeyValue, prefix: str) -> Entry:
    return Entry(kv.key.decode()[len(prefix) :], kv.value, kv.create_revision, kv.mod_revision, kv.lease)


class Etcd:
    """A connection to one etcd endpoint ("host:port"). Keys are given relative to
    `prefix` ("/cloche/" in production; tests use one prefix each to share a server)."""

    def __init__(self, endpoint: str, *, prefix: str = "/cloche/", timeout: float = 1.0) -> None:
        host, _, port = endpoint.rpartition(":")
        self.prefix = prefix
        self.timeout = timeout
        self.client = aetcd.Client(host=host, port=int(port), timeout=timeout, options=CHANNEL_OPTIONS)

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    async def __aenter__(self) -> Etcd:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def get(self, key: str) -> Entry | None:
        kv = await self.client.get(self._key(key))
        return None if kv is None else _entry(kv, self.prefix)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """Every key under `prefix`, and the store revision they were read at."""
        got = await self.client.get_prefix(self._key(prefix))
        return [_entry(kv, self.prefix) for kv in got], got.header.revision

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Set `key`; returns the revision of the write."""
        return int((await self.client.put(self._key(key), value, lease=lease)).header.revision)

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> tuple[bool, Entry]:
        """Create `key` only if it does not exist, in one transaction. Returns (created,
        the key as it now is): on failure the entry is the current holder's."""
        tx = self.client.transactions
        k = self._key(key)
        ok, responses = await self.client.transaction(
            compare=[tx.create(k) == 0],
            success=[tx.put(k, value, lease=lease), tx.get(k)],
            failure=[tx.get(k)],
        )
        (_, current), *_ = responses[-1]  # the read, in the same transaction, always finds it
        return bool(ok), _entry(current, self.prefix)

    async def delete_if(self, key: str, create_revision: int) -> bool:
        """Delete `key` only if it is still the incarnation created at `create_revision`."""
        tx = self.client.transactions
        k = self._key(key)
        ok, _ = await self.client.transaction(
            compare=[tx.create(k) == create_revision], success=[tx.delete(k)], failure=[]
        )
        return bool(ok)

    async def delete(self, key: str) -> bool:
        """Delete `key`; whether it existed."""
        return bool(await self.client.delete(self._key(key)))

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease; returns (id, granted TTL), which etcd may raise to its minimum."""
        lease = await self.client.lease(ttl)
        return int(lease.id), int(lease.ttl)

    async def keepalive(self, lease: int) -> int:
        """Renew `lease` once; returns its new TTL, 0 when the lease no longer exists."""
        reply = await self.client.refresh_lease(lease)
        return 0 if reply is None else int(reply.TTL)

    async def revoke(self, lease: int) -> None:
        await self.client.revoke_lease(lease)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        """Changes under `prefix` from `start_revision` on, until the stream breaks (it then
        raises `EtcdUnavailable`; re-list and watch again from the new revision)."""
        watch = await self.client.watch_prefix(self._key(prefix), start_revision=start_revision, prev_kv=True)
        try:
            async for event in watch:
                deleted = event.kind == "DELETE"
                kv = event.prev_kv if deleted and event.prev_kv is not None else event.kv
                yield Change(deleted, _entry(kv, self.prefix), event.kv.mod_revision)
        finally:
            await watch.cancel()

    async def follow(self, prefix: str, revision: int, apply: Callable[[Change], Awaitable[None]],
                     relist: Callable[[], Awaitable[int]], retry_s: float) -> None:  # fmt: skip
        """Hand every change under `prefix` after `revision` to `apply`, forever: when the
        stream breaks, wait `retry_s`, let `relist` read the keys again (it returns the
        revision it read at) and watch on from there. What every watcher of a key range
        (nodes, moves) needs, so a restarted etcd is caught up with, not missed."""
        while True:
            try:
                async for change in self.watch(prefix, revision + 1):
                    await apply(change)
                    revision = change.revision
            except Exception as e:  # a broken stream: list again, then watch from there
                log.warning("watch of %s broke (%s); listing again", prefix, e)
            await asyncio.sleep(retry_s)
            with contextlib.suppress(EtcdUnavailable, TimeoutError):
                revision = await relist()
