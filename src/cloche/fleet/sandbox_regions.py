"""Each cluster sandbox's region, its users' regions and its checkpoint replica, in PostgreSQL.

Why it exists: with a snapshot store per region, where a sandbox's files are readable
must survive its node and every replica; so must its agent's request history (the
follow-the-user decision is taken on whichever replica wakes it) and the replica of
its last checkpoint in another region (what it resumes from if its region is lost).
Rows are made as they are first needed (`record`, `moved`, `noted`, `replicated`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cloche.geo.follow import RegionHistory
from cloche.store.db import Store


@dataclass(frozen=True)
class SandboxRegion:
    sandbox_id: str
    region: str | None  # the region whose store holds its files
    history: RegionHistory
    last_move_at: float | None
    replica_region: str | None
    replica_manifest: str | None
    replica_at: float | None


_UPSERT = "INSERT INTO sandbox_regions (sandbox_id, {cols}) VALUES (?, {marks}) ON CONFLICT (sandbox_id) DO UPDATE SET "


class SandboxRegions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, sandbox_id: str) -> SandboxRegion:
        rows = self.store.query("SELECT region, history, last_move_at, replica_region, replica_manifest, replica_at "
                                "FROM sandbox_regions WHERE sandbox_id = ?", (sandbox_id,))  # fmt: skip
        if not rows:
            return SandboxRegion(sandbox_id, None, RegionHistory(), None, None, None, None)
        region, history, moved, replica_region, replica_manifest, replica_at = rows[0]
        return SandboxRegion(sandbox_id, region, RegionHistory.from_json(json.loads(history)) if history
                             else RegionHistory(), moved, replica_region, replica_manifest, replica_at)  # fmt: skip

    def _upsert(self, sandbox_id: str, values: dict[str, object]) -> None:
        cols = ", ".join(values)
        sql = _UPSERT.format(cols=cols, marks=", ".join("?" for _ in values))
        sql += ", ".join(f"{c} = excluded.{c}" for c in values)
        self.store.query(sql, (sandbox_id, *values.values()))

    def record(self, sandbox_id: str, region: str) -> None:
        """Its files are in `region`'s store now (it runs there)."""
        self._upsert(sandbox_id, {"region": region})

    def moved(self, sandbox_id: str, region: str, at: float) -> None:
        self._upsert(sandbox_id, {"region": region, "last_move_at": at})

    def noted(self, sandbox_id: str, history: RegionHistory) -> None:
        self._upsert(sandbox_id, {"history": json.dumps(history.to_json())})

    def replicated(self, sandbox_id: str, region: str, manifest: str, at: float) -> None:
        self._upsert(sandbox_id, {"replica_region": region, "replica_manifest": manifest, "replica_at": at})

    def replicas(self) -> dict[str, str]:
        """Sandbox id -> the checkpoint manifest its replica holds."""
        rows = self.store.query("SELECT sandbox_id, replica_manifest FROM sandbox_regions "
                                "WHERE replica_manifest IS NOT NULL")  # fmt: skip
        return {str(r[0]): str(r[1]) for r in rows}
