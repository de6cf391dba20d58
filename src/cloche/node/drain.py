"""Bringing every live sandbox to a safe state before the node stops.

Why it exists: at shutdown each running or paused sandbox is hibernated (it wakes
after the restart) or killed, two at a time, with progress logged, and stopped
instead once the shutdown is forced or one of them fails. That policy is apart from
the verbs it uses, which are the lifecycle's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from cloche.node.records import SandboxRecord

log = logging.getLogger("cloche.node")


class DrainActions(Protocol):
    """The lifecycle verbs the drain uses (the NodeRuntime's)."""

    def list(self) -> list[SandboxRecord]: ...

    async def stop(self, sandbox_id: str) -> SandboxRecord: ...

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord: ...

    async def kill(self, sandbox_id: str) -> None: ...


async def drain(node: DrainActions, on_shutdown: str, forced: Callable[[], bool]) -> None:
    """Hibernate (on_shutdown == "hibernate") or kill every running or paused sandbox;
    once `forced()` turns true, the ones not done yet are only stopped (processes
    killed, everything unmounted, the disk kept)."""
    live = [r for r in node.list() if r.state in ("running", "paused")]
    if not live:
        return
    verb = "hibernating" if on_shutdown == "hibernate" else "killing"
    total, done = len(live), 0
    log.info("%s %d sandboxes", verb, total)
    gate = asyncio.Semaphore(2)

    async def one(rec: SandboxRecord) -> None:
        nonlocal done
        async with gate:
            try:
                if forced():
                    await node.stop(rec.id)
                elif on_shutdown == "hibernate":
                    await node.hibernate(rec.id)
                else:
                    await node.kill(rec.id)
            except Exception:
                log.exception("%s %s failed; stopping it instead", verb, rec.id)
                await node.stop(rec.id)
            done += 1
            log.info("%s %d sandboxes: %d/%d", verb, total, done, total)

    await asyncio.gather(*(one(r) for r in live))
