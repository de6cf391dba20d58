"""Changing a sandbox's settings in place: network policy, limits, timeout, env.

Why it exists: each change is written to the record, and to the live sandbox when it
runs (its nftables chain, its cgroup) without restarting it; a sleeping one gets the
change when it wakes. What can and cannot change live is decided here, in one place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from cloche.node.errors import InvalidSpec, InvalidState
from cloche.node.net.policy import NetworkPolicy
from cloche.node.provision import SandboxBuilder
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits


class LiveChanges:
    def __init__(self, builder: SandboxBuilder) -> None:
        self.builder = builder
        self.table = builder.table
        self.records = builder.records
        self._background: set[asyncio.Future[None]] = set()

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord:
        """Replace the sandbox's network policy atomically. A running or paused sandbox
        gets it at once, and its open connections the new policy denies are cut; a
        sleeping one gets it when it wakes."""
        network = self.builder.network
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            if network is None:
                raise InvalidState("networking is off on this node")
            await network.check_policy(policy)
            live = rec.state in ("running", "paused")
            if live:
                await asyncio.to_thread(network.apply, sandbox_id, policy)  # fails: nothing changed
            rec.spec = replace(rec.spec, network=policy)
            await asyncio.to_thread(self.records.save, rec)
            if live:
                # New connections already meet the new policy; cutting the open ones it
                # denies (a conntrack flush, ~10 ms) need not hold up the answer.
                cut = asyncio.ensure_future(asyncio.to_thread(network.cut, sandbox_id))
                self._background.add(cut)
                cut.add_done_callback(self._background.discard)
            return rec

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        rec = self.table.get(sandbox_id)
        rec.spec = replace(rec.spec, timeout_s=timeout_s)
        rec.spec.validate()
        rec.expires_at = time.time() + timeout_s if timeout_s else None
        await asyncio.to_thread(self.records.save, rec)
        return rec

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        rec = self.table.get(sandbox_id)
        rec.spec = replace(rec.spec, env=env)
        await asyncio.to_thread(self.records.save, rec)
        return rec

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord:
        """Change a sandbox's cpu, memory and pids limits in place: written to its cgroup
        when it runs (no restart, its processes untouched), else applied when it starts.
        The disk cannot change size. A memory limit below what the sandbox uses fails
        (the kernel refuses to reclaim it) and leaves the old limits."""
        async with self.table.lock(sandbox_id):
            rec = self.table.get(sandbox_id)
            limits.validate()
            old = rec.spec.limits
            if (limits.disk_mb, limits.inodes) != (old.disk_mb, old.inodes):
                raise InvalidSpec("a sandbox's disk size cannot change")
            if rec.state in ("running", "paused") and limits != old:
                if self.builder.driver(rec).pids_fixed_at_boot and limits.pids != old.pids:
                    raise InvalidState("a running gVisor sandbox's pids limit cannot change (it is its processes' "
                                       "RLIMIT_NPROC, set at boot): stop and start it to apply a new one")  # fmt: skip
                try:
                    await asyncio.to_thread(self.builder.set_limits, rec, limits)
                except OSError as exc:
                    await asyncio.to_thread(self.builder.set_limits, rec, old)
                    raise InvalidState(f"the new limits cannot be applied: {exc.strerror or exc}") from None
            rec.spec = replace(rec.spec, limits=limits)
            await asyncio.to_thread(self.records.save, rec)
            return rec
