"""Where each sandbox of a cluster runs, kept in the control-plane database.

Why it exists: a node that dies takes its records with it. What must survive it is
here, in PostgreSQL beside the other records: the sandbox's node and whether it still
runs there, its record as last seen (id, spec, times), its last checkpoint (a manifest
in the snapshot store) and its last loss: when its node was lost and how much work it
lost (seconds since the checkpoint). Every server replica reads and writes the same rows.

States: `live` (on `node`), `lost` (its node's lease expired; it resumes from its
checkpoint on its next wake) and `parked` (a drain moved its files to the store; it
resumes on its next wake, having lost nothing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

from cloche.node.records import SandboxRecord
from cloche.store.db import Store

LIVE, LOST, PARKED = "live", "lost", "parked"


@dataclass(frozen=True)
class Placement:
    sandbox_id: str
    node: str
    state: str
    record: SandboxRecord
    checkpoint: str | None
    checkpoint_at: float | None
    lost_at: float | None  # the last loss (kept after it is resumed)
    lost_work_s: float | None

    @property
    def away(self) -> bool:
        """Not on any node: it resumes from its checkpoint on its next wake."""
        return self.state != LIVE

    def asleep(self) -> SandboxRecord:
        """Its record as the API shows it while away: hibernated, at its checkpoint."""
        return replace(self.record, state="hibernated", snapshot=self.checkpoint)

    def recovery(self) -> dict[str, float | str | None] | None:
        """The last loss as the API shows it (None if it never lost its node)."""
        if self.lost_at is None:
            return None
        return {"lost_at": self.lost_at, "lost_work_s": self.lost_work_s, "checkpoint_at": self.checkpoint_at}


_COLUMNS = "sandbox_id, node, state, record, checkpoint, checkpoint_at, lost_at, lost_work_s"


def _placement(row: tuple[object, ...]) -> Placement:
    sandbox_id, node, state, record, checkpoint, checkpoint_at, lost_at, lost_work_s = row
    rec = SandboxRecord.from_json(json.loads(str(record)))
    return Placement(str(sandbox_id), str(node), str(state), rec, None if checkpoint is None else str(checkpoint),
                     _float(checkpoint_at), _float(lost_at), _float(lost_work_s))  # fmt: skip


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class PlacementTable:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[Placement]:
        return [_placement(r) for r in self.store.query(f"SELECT {_COLUMNS} FROM placements {where}", args)]

    def place(self, node: str, rec: SandboxRecord) -> None:
        """`rec` runs on `node` now (created there, or taken in after a loss or a drain)."""
        self.store.query(
            "INSERT INTO placements (sandbox_id, node, state, record, updated_at) VALUES (?, ?, 'live', ?, ?) "
            "ON CONFLICT (sandbox_id) DO UPDATE SET node = excluded.node, state = 'live', record = excluded.record, "
            "updated_at = excluded.updated_at",
            (rec.id, node, json.dumps(rec.to_json()), time.time()),
        )

    def checkpointed(self, sandbox_id: str, node: str, manifest: str, at: float) -> None:
        self.store.query("UPDATE placements SET checkpoint = ?, checkpoint_at = ?, updated_at = ? "
                         "WHERE sandbox_id = ? AND node = ? AND state = 'live'",
                         (manifest, at, time.time(), sandbox_id, node))  # fmt: skip

    def lose(self, node: str, at: float) -> int:
        """Mark every live sandbox of `node` lost at `at`, with the work each lost; how many."""
        found = self._select("WHERE node = ? AND state = 'live'", (node,))
        for p in found:
            since = p.checkpoint_at if p.checkpoint_at is not None else p.record.created_at
            if p.record.state == "hibernated" and p.checkpoint == p.record.snapshot:
                since = at  # asleep in the store: nothing to lose
            self.store.query("UPDATE placements SET state = 'lost', lost_at = ?, lost_work_s = ?, updated_at = ? "
                             "WHERE sandbox_id = ? AND node = ? AND state = 'live'",
                             (at, round(max(0.0, at - since), 3), time.time(), p.sandbox_id, node))  # fmt: skip
        return len(found)

    def park(self, sandbox_id: str, manifest: str) -> None:
        """Its files are all in the store (a drain hibernated it): off every node until woken."""
        now = time.time()
        self.store.query("UPDATE placements SET state = 'parked', checkpoint = ?, checkpoint_at = ?, updated_at = ? "
                         "WHERE sandbox_id = ?", (manifest, now, now, sandbox_id))  # fmt: skip

    def get(self, sandbox_id: str) -> Placement | None:
        found = self._select("WHERE sandbox_id = ?", (sandbox_id,))
        return found[0] if found else None

    def live_nodes(self) -> set[str]:
        """The nodes that live placements name."""
        return {str(r[0]) for r in self.store.query("SELECT DISTINCT node FROM placements WHERE state = 'live'")}

    def checkpointed_live(self) -> list[Placement]:
        """The live sandboxes that have a checkpoint."""
        return self._select("WHERE state = 'live' AND checkpoint IS NOT NULL")

    def unchecked(self) -> set[str]:
        """The live sandboxes with no checkpoint yet."""
        rows = self.store.query("SELECT sandbox_id FROM placements WHERE state = 'live' AND checkpoint IS NULL")
        return {str(r[0]) for r in rows}

    def eventful(self) -> list[Placement]:
        """The placements away from any node now, or that ever lost their node."""
        return self._select("WHERE state <> 'live' OR lost_at IS NOT NULL")

    def forget(self, sandbox_id: str) -> None:
        self.store.query("DELETE FROM placements WHERE sandbox_id = ?", (sandbox_id,))
