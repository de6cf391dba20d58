"""Warm pool: pre-started sandboxes of one template, claimed by creates that fit.

A claim takes a ready sandbox (its limits and env are adjusted in place, which costs
microseconds), and the pool refills in the background, one sandbox at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec

log = logging.getLogger("cloche.pool")


class PoolHost(Protocol):
    """What the pool needs from the node that runs it (the NodeRuntime)."""

    async def create_cold(self, spec: SandboxSpec, pooled: bool = False,
                          snapshot: str | None = None) -> SandboxRecord: ...  # fmt: skip

    def adopt_from_pool(self, rec: SandboxRecord, spec: SandboxSpec) -> SandboxRecord: ...

    async def announce_started(self, rec: SandboxRecord) -> None: ...

    async def kill(self, sandbox_id: str) -> None: ...


class WarmPool:
    def __init__(self, runtime: PoolHost, template: str, limits: Limits, size: int, isolation: str,
                 pids_fixed_at_boot: bool) -> None:  # fmt: skip
        self.runtime = runtime
        self.template = template
        self.isolation = isolation
        self.pids_fixed_at_boot = pids_fixed_at_boot  # the tier sets pids at boot: a claim cannot change them
        self.limits = limits
        self.size = size
        self.ready: list[SandboxRecord] = []
        self.claims = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.size > 0:
            self._task = asyncio.create_task(self._fill())

    def set_size(self, size: int) -> None:
        """Change the target size (the scheduler's autosizer calls this); a smaller
        target is reached as claims take sandboxes, a larger one by refilling."""
        self.size = max(0, size)
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._fill())
        self._wake.set()

    def fits(self, spec: SandboxSpec) -> bool:
        return (
            spec.template == self.template
            and spec.isolation == self.isolation
            and spec.limits.disk_mb == self.limits.disk_mb
            and spec.limits.inode_count == self.limits.inode_count
            and (not self.pids_fixed_at_boot or spec.limits.pids == self.limits.pids)
        )

    async def claim(self, spec: SandboxSpec) -> SandboxRecord | None:
        if not self.ready or not self.fits(spec):
            return None
        rec = self.ready.pop()
        self.claims += 1
        self._wake.set()
        claimed = await asyncio.to_thread(self.runtime.adopt_from_pool, rec, spec)
        await self.runtime.announce_started(claimed)
        return claimed

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the pool is full (used by tests, benchmarks and startup)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.ready) < self.size:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("warm pool did not fill in time")
            await asyncio.sleep(0.01)

    async def _fill(self) -> None:
        spec = SandboxSpec(template=self.template, limits=self.limits, isolation=self.isolation)
        while True:
            while len(self.ready) < self.size:
                try:
                    rec = await self.runtime.create_cold(spec, pooled=True)
                except Exception:
                    log.exception("warm pool could not start a sandbox; retrying in 5 s")
                    await asyncio.sleep(5)
                    continue
                self.ready.append(rec)
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        while self.ready:
            rec = self.ready.pop()
            await self.runtime.kill(rec.id)
