"""Reaching a sandbox's ports from outside, through control.

Why it exists: the ingress proxy (server/ingress/) authorizes by token, signed URL or
the owner's key, then asks control for the rest: the sandbox's record (its policy), a
wake when it sleeps, the activity touch, and the TCP stream to the port. The node is
never held by the server, so the same calls work for a node across a network.
"""

from __future__ import annotations

import asyncio

from cloche.control.errors import ApiError, not_found
from cloche.node.api import Node
from cloche.node.errors import SandboxNotFound
from cloche.node.records import SandboxRecord

SLEEPING = ("paused", "stopped", "hibernated")


class Ports:
    def __init__(self, node: Node) -> None:
        self.node = node

    def record(self, sandbox_id: str) -> SandboxRecord:
        try:
            return self.node.get(sandbox_id)
        except SandboxNotFound:
            raise not_found("sandbox", sandbox_id) from None

    def touch(self, sandbox_id: str) -> None:
        """Record activity (postpones the idle policy)."""
        self.node.touch(sandbox_id)

    async def reach(self, sandbox_id: str) -> tuple[str, bool]:
        """Wake the sandbox if it sleeps, record the activity; its address and whether it woke."""
        woke = False
        try:
            if self.node.get(sandbox_id).state in SLEEPING:
                await self.node.wake(sandbox_id)
                woke = True
            self.node.touch(sandbox_id)
            rec = self.node.get(sandbox_id)
        except SandboxNotFound:
            raise not_found("sandbox", sandbox_id) from None
        if not self.node.networking:
            raise ApiError(409, "network_off", "networking is off on this server (network=0): "
                                               "sandbox ports cannot be reached")  # fmt: skip
        address = (rec.net or {}).get("address")
        if address is None:
            raise ApiError(409, "invalid_state", f"sandbox {sandbox_id} is {rec.state} and has no network link")
        return address, woke

    async def connect(self, sandbox_id: str, port: int,
                      limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        """A TCP stream to a port the sandbox listens on."""
        return await self.node.connect(sandbox_id, port, limit=limit)
