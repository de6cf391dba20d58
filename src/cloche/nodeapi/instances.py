"""One running instance per sandbox, cluster-wide, as a node keeps it.

Why it exists: after a failover two nodes can hold the same sandbox (the one that was cut
off still has its copy). Before a node starts, wakes or takes in a sandbox it claims
`/cloche/instances/sandbox/<id>` in etcd under its lease (`cloche.cluster.claims`); a
claim another node holds refuses the request. When the node cannot renew its lease, its
session fences, and `fence` pauses every sandbox it runs (cgroup freeze: no process of
theirs runs, nothing answers) before etcd can expire the lease and let another node
start them; the claims made under the lost lease are forgotten, so serving any of them
again first claims anew. Each claim's fencing token is what the node's state socket
attaches to the sandbox's writes, and PostgreSQL learns it before the sandbox serves, so
a write still on its way from an older instance is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cloche.cluster import claims
from cloche.cluster.claims import Claim, InstanceHeld
from cloche.cluster.etcd import Etcd, EtcdUnavailable
from cloche.cluster.membership import NodeRegistration
from cloche.cluster.session import Fenced, Session
from cloche.node.errors import InvalidState, RuntimeFailure
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime
from cloche.state.engine import Fence, StateError

log = logging.getLogger("cloche.instances")
APP = "sandbox"  # the claim's namespace: each (app, key) agent maps to exactly one sandbox id
REGISTER_WAIT_S = 5.0  # how long a request waits for the node to register again after a fence


class InstanceGuard:
    """Claims before serving, releases after, pauses everything on a fence."""

    def __init__(self, etcd: Etcd, registration: NodeRegistration, rt: NodeRuntime) -> None:
        self.etcd = etcd
        self.registration = registration
        self.rt = rt
        self.node_id = registration.node_id
        self.held: dict[str, tuple[Claim, Session]] = {}
        self.fences = 0  # how many times the node has fenced (reported by /v1/info)
        # told of each new claim before the sandbox serves (the state engine records its token)
        self.on_claim: Callable[[Fence], Awaitable[None]] | None = None
        self._dropping: set[asyncio.Task[None]] = set()  # stale copies being removed

    def fence_of(self, sandbox_id: str) -> Fence:
        """What the sandbox's state writes carry now: its claim's token, or 0 while it holds
        none (after a fence), which every claim ever made outranks."""
        held = self.held.get(sandbox_id)
        token = held[0].token if held and held[1] is self.registration.session else 0
        return Fence(APP, sandbox_id, token)

    async def _session(self) -> Session:
        try:
            await asyncio.wait_for(self.registration.registered.wait(), REGISTER_WAIT_S)
        except TimeoutError:
            raise RuntimeFailure(
                f"node {self.node_id} is cut off from etcd and serves nothing until it is back"
            ) from None
        assert self.registration.session is not None
        return self.registration.session

    async def hold(self, sandbox_id: str) -> Claim:
        """Claim the sandbox for this node (a no-op when this session already holds it).
        InvalidState when another node serves it; RuntimeFailure when cut off from etcd."""
        session = await self._session()
        held = self.held.get(sandbox_id)
        if held is not None and held[1] is session:
            return held[0]
        try:
            claim = await claims.claim(self.etcd, session, APP, sandbox_id, self.node_id)
        except InstanceHeld as e:
            if e.holder.node != self.node_id:
                raise InvalidState(f"sandbox {sandbox_id} is served by node {e.holder.node}") from None
            claim = e.holder  # ours, made under this same lease by a request that raced this one
        except (Fenced, EtcdUnavailable, TimeoutError) as e:
            raise RuntimeFailure(f"node {self.node_id} cannot claim sandbox {sandbox_id}: {e}") from e
        if self.on_claim is not None:
            try:
                await self.on_claim(Fence(APP, sandbox_id, claim.token))
            except StateError as e:  # the state store is out of reach: it may not serve yet
                raise RuntimeFailure(f"sandbox {sandbox_id} cannot start: {e}") from e
        self.held[sandbox_id] = (claim, session)
        return claim

    async def let_go(self, sandbox_id: str) -> None:
        held = self.held.pop(sandbox_id, None)
        if held is None or held[1] is not self.registration.session:
            return
        try:
            await claims.release(self.etcd, held[0])
        except (EtcdUnavailable, TimeoutError) as e:  # the key goes with the lease at the latest
            log.warning("could not release sandbox %s: %s", sandbox_id, e)

    # ---- SandboxEvents: what the runtime starts without being asked through the API ----

    async def sandbox_started(self, record: SandboxRecord) -> None:
        """A sandbox the node started on its own (adopted at restart): claim it, and drop
        the local copy when another node has taken it over meanwhile."""
        try:
            await self.hold(record.id)
        except InvalidState as e:
            log.warning("%s: removing the stale local copy", e)
            # not here: the runtime is still announcing this sandbox's start
            task = asyncio.get_running_loop().create_task(self.rt.kill(record.id))
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)
        except RuntimeFailure as e:
            log.warning("%s", e)

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        await self.let_go(sandbox_id)

    # ---- fencing -----------------------------------------------------------------------

    async def fence(self) -> None:
        """The lease may expire: stop serving every sandbox before it does."""
        started = time.monotonic()
        self.fences += 1
        self.held.clear()
        running = [r.id for r in self.rt.list() if r.state == "running"]
        results = await asyncio.gather(*(self.rt.pause(sid) for sid in running), return_exceptions=True)
        for sid, result in zip(running, results, strict=True):
            if isinstance(result, BaseException):
                log.error("fencing: could not pause %s (%s); killing it", sid, result)
                await self.rt.kill(sid)
        log.warning("node %s fenced: paused %d sandboxes in %.3f s", self.node_id, len(running),
                    time.monotonic() - started)  # fmt: skip
