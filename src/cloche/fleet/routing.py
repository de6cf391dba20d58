"""Routing: which live node holds a sandbox, and where a sandbox is, for its API view.

Why it exists: every call control makes about a sandbox goes to the one node that holds
it. A node's events say what it holds; a sandbox another replica placed a moment ago is
found by its placement; one on no node (lost, parked) is shown hibernated and answered
with an error that says to wake it. `Fleet` (fleet/fleet.py) routes each `Node` call
through `_remote`/`_holder` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloche.cluster.etcd import Etcd
from cloche.fleet import where
from cloche.fleet.members import FleetMembers
from cloche.fleet.placements import PlacementTable
from cloche.fleet.sandbox_regions import SandboxRegions
from cloche.node.errors import InvalidState, RuntimeFailure, SandboxNotFound
from cloche.nodeapi.client import RemoteNode


class FleetRouting(FleetMembers):
    """The members, with each sandbox routed to the node that holds it."""

    def __init__(self, etcd: Etcd, cluster_dir: Path, placements: PlacementTable) -> None:
        super().__init__(etcd, cluster_dir, placements)
        self.homes = SandboxRegions(placements.store)  # each sandbox's region: where it runs, or its files are
        self._homes: dict[str, str] = {}  # sandbox id -> its home region, as last placed or read

    def node_of(self, sandbox_id: str) -> str | None:
        """The live node that holds the sandbox (None when it has none: lost or unknown)."""
        for member in self.members.values():
            if member.remote.has(sandbox_id):
                return member.node_id
        if sandbox_id in self._lost:  # known to be on no node (list() asks this every scheduler tick)
            return None
        # Another replica may have placed it a moment ago, its node's event still on the
        # way here: the placement (written before that replica answered) names the node.
        placed = self.placements.get(sandbox_id)
        if placed is None or placed.away or placed.node not in self.members:
            return None
        return placed.node if self.members[placed.node].remote.fetch(sandbox_id) else None

    def is_away(self, sandbox_id: str) -> bool:
        """Whether the sandbox is on no node (lost, or parked by a drain). The set is read
        again every REFRESH_S; one that left its node since (a drain just parked it, and
        the node's event already took it off the node) is asked of its placement, so it
        is never "not found" in between."""
        if sandbox_id in self._lost:
            return True
        placed = self.placements.get(sandbox_id)
        if placed is None or not placed.away:
            return False
        self._lost[sandbox_id] = placed.asleep()
        return True

    def lost_ids(self) -> list[str]:
        """The sandboxes on no node now (their node was lost, or a drain parked them)."""
        return list(self._lost)

    def locate(self, sandbox_id: str) -> dict[str, Any]:
        """Where the sandbox is, for its API view: its node and the node's region ("" when
        on none), its home region, and its last loss of a node (`recovery`: when, the work
        lost, the checkpoint it resumed from)."""
        node = self.node_of(sandbox_id)
        home = self._homes.get(sandbox_id)
        if home is None:
            home = self.homes.get(sandbox_id).region
            if home is not None:
                self._homes[sandbox_id] = home
        return {"node": node or "", "region": self.members[node].info.region if node else "",
                "home_region": home, "recovery": self._recovery.get(sandbox_id)}  # fmt: skip

    def _holder(self, sandbox_id: str, serving: bool = False) -> RemoteNode | None:
        """The sandbox's node; `serving`: the call reaches the sandbox, and the request's
        answer says where (`cloche-region`)."""
        node = self.node_of(sandbox_id)
        if node is None:
            return None
        member = self.members[node]
        if serving:
            where.served_in(member.info.region)
        return member.remote

    def _remote(self, sandbox_id: str) -> RemoteNode:
        remote = self._holder(sandbox_id, serving=True)
        if remote is not None:
            return remote
        if self.is_away(sandbox_id):
            raise InvalidState(f"sandbox {sandbox_id} was on a node that was lost; wake it to resume it "
                               "from its last checkpoint")  # fmt: skip
        raise SandboxNotFound(f"sandbox {sandbox_id} not found")

    def _any(self) -> RemoteNode:
        for member in self.members.values():
            return member.remote
        raise RuntimeFailure("no node is live in the cluster")
