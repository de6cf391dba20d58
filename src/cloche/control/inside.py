"""Inside a tenant's sandbox: its files and its commands, through control.

Why it exists: routes, the dashboard and E2B reach a sandbox's files and processes only
through control, which checks ownership (another tenant's sandbox is not found), wakes a
sleeping sandbox (waking is transparent to the caller) and records the activity before
the node is asked. The node's answers are streams (`SandboxFiles`, `ExecStream`), so
this works the same whether the node is in this process or across a network.
"""

from __future__ import annotations

from cloche.control.sandboxes import SandboxService
from cloche.node.api import ExecStream, SandboxFiles
from cloche.node.protocol import ExecRequest
from cloche.node.supervisor import ExecResult
from cloche.store.db import Tenant


class Inside:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self.node = sandboxes.node

    async def files(self, tenant: Tenant, sandbox_id: str) -> SandboxFiles:
        """The files of the tenant's sandbox, woken first if it sleeps."""
        await self.sandboxes.woken(tenant, sandbox_id)
        return self.node.files(sandbox_id)

    async def run(self, tenant: Tenant, sandbox_id: str, request: ExecRequest) -> ExecResult:
        """Run a command to its end in the tenant's sandbox (woken first if it sleeps)."""
        await self.sandboxes.woken(tenant, sandbox_id)
        return await self.node.exec(sandbox_id, request)

    async def start(self, tenant: Tenant, sandbox_id: str, request: ExecRequest) -> ExecStream:
        """Start a command in the tenant's sandbox (woken first if it sleeps), as a stream."""
        await self.sandboxes.woken(tenant, sandbox_id)
        return await self.node.open_exec(sandbox_id, request)

    async def open_exec(self, sandbox_id: str, request: ExecRequest) -> ExecStream:
        """Start a command in a sandbox the caller has already checked and woken: a
        kernel that outlives one request (re)starts its process through this."""
        return await self.node.open_exec(sandbox_id, request)
