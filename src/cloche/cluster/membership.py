"""Node membership: each `cloche node` registers itself under a lease and keeps it alive;
the servers watch the registrations for the live node set. A node is live exactly as long
as its lease: when it dies or is cut off, etcd deletes its key at expiry and every watcher
sees it `lost`, which is what triggers failover of its agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Literal

from cloche.cluster.etcd import Change, Etcd, EtcdUnavailable
from cloche.cluster.session import DEFAULT_MARGIN, DEFAULT_TTL, FenceCallback, Session

log = logging.getLogger(__name__)

NODES = "nodes/"
RETRY_INTERVAL = 0.3


@dataclass(frozen=True)
class NodeInfo:
    """What a node tells the cluster about itself (`/cloche/nodes/<id>`, as JSON)."""

    address: str
    capacity: int
    load: int = 0
    region: str = ""
    zone: str = ""
    isolation: tuple[str, ...] = ()
    version: str = ""

    def to_json(self) -> bytes:
        labels = {"region": self.region, "zone": self.zone, "isolation": list(self.isolation)}
        doc = {"address": self.address, "capacity": self.capacity, "load": self.load,
               "labels": labels, "version": self.version}  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NodeInfo:
        doc = json.loads(raw)
        labels = doc.get("labels", {})
        return cls(address=doc["address"], capacity=int(doc["capacity"]), load=int(doc.get("load", 0)),
                   region=labels.get("region", ""), zone=labels.get("zone", ""),
                   isolation=tuple(labels.get("isolation", ())), version=doc.get("version", ""))  # fmt: skip


class NodeRegistration:
    """Keeps one node registered. When its session fences (etcd unreachable for longer
    than the lease allows) the fencing callbacks run, and the registration then retries
    until it can register again under a new session: no operator action is needed."""

    def __init__(self, etcd: Etcd, node_id: str, info: NodeInfo, *, ttl: int = DEFAULT_TTL,
                 margin: float = DEFAULT_MARGIN, on_fenced: FenceCallback | None = None) -> None:  # fmt: skip
        self.etcd = etcd
        self.node_id = node_id
        self.info = info
        self.ttl = ttl
        self.margin = margin
        self.on_fenced = on_fenced
        self.session: Session | None = None
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> NodeRegistration:
        await self._register()
        self._task = asyncio.create_task(self._supervise(), name=f"node-registration-{self.node_id}")
        return self

    async def update(self, **changes: object) -> None:
        """Change what the node advertises (e.g. `load=`), under its current lease."""
        self.info = replace(self.info, **changes)
        if self.session is not None and self.registered.is_set():
            await self.etcd.put(NODES + self.node_id, self.info.to_json(), lease=self.session.lease)

    async def close(self) -> None:
        """Leave the cluster: revoking the lease removes the key at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.registered.clear()
        if self.session is not None:
            await self.session.close()

    async def __aenter__(self) -> NodeRegistration:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _register(self) -> None:
        session = await Session(self.etcd, ttl=self.ttl, margin=self.margin).open()
        if self.on_fenced is not None:
            session.on_fenced(self.on_fenced)
        try:
            await self.etcd.put(NODES + self.node_id, self.info.to_json(), lease=session.lease)
        except BaseException:
            await session.close()
            raise
        self.session = session
        self.registered.set()

    async def _supervise(self) -> None:
        while True:
            assert self.session is not None
            fenced = self.session
            await fenced.fenced.wait()
            self.registered.clear()
            while not self.registered.is_set():
                try:
                    await self._register()
                    log.info("node %s registered again under lease %x", self.node_id, self.session.lease)
                except (EtcdUnavailable, TimeoutError) as e:
                    log.warning("node %s: cannot register yet (%s)", self.node_id, e)
                    await asyncio.sleep(RETRY_INTERVAL)
            # etcd may still keep the fenced lease (it renews every lease when it restarts):
            # revoke it, so the claims made under it free up now rather than at its expiry
            await fenced.close()


@dataclass(frozen=True)
class NodeEvent:
    kind: Literal["joined", "updated", "lost"]
    node_id: str
    info: NodeInfo


class NodeWatcher:
    """The live node set, kept current from a watch on `/cloche/nodes/`. After a broken
    watch (etcd restarted, connection lost) it lists again and reports what changed
    meanwhile, so no join or loss is missed."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.nodes: dict[str, NodeInfo] = {}
        self._changed = asyncio.Condition()
        self._events: asyncio.Queue[NodeEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> NodeWatcher:
        revision = await self._relist()
        self._task = asyncio.create_task(self._watch(revision), name="node-watcher")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> NodeWatcher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[NodeEvent]:
        """Every join, update and loss, in order (the nodes found at start come as joins)."""
        while True:
            yield await self._events.get()

    async def wait_for(self, predicate: Callable[[dict[str, NodeInfo]], bool], timeout: float) -> None:
        """Wait until `predicate(nodes)` holds; raises TimeoutError after `timeout` s."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.nodes))

    async def _set(self, node_id: str, info: NodeInfo | None) -> None:
        old = self.nodes.get(node_id)
        if info is None:
            if old is not None:
                del self.nodes[node_id]
                self._events.put_nowait(NodeEvent("lost", node_id, old))
        elif old != info:
            self.nodes[node_id] = info
            self._events.put_nowait(NodeEvent("joined" if old is None else "updated", node_id, info))
        async with self._changed:
            self._changed.notify_all()

    async def _relist(self) -> int:
        entries, revision = await self.etcd.list(NODES)
        live = {e.key[len(NODES) :]: NodeInfo.from_json(e.value) for e in entries}
        for node_id in [n for n in self.nodes if n not in live]:
            await self._set(node_id, None)
        for node_id, info in live.items():
            await self._set(node_id, info)
        return revision

    async def _watch(self, revision: int) -> None:
        await self.etcd.follow(NODES, revision, self._apply, self._relist, RETRY_INTERVAL)

    async def _apply(self, change: Change) -> None:
        node_id = change.entry.key[len(NODES) :]
        await self._set(node_id, None if change.deleted else NodeInfo.from_json(change.entry.value))
