"""Version 2: where each sandbox runs in a cluster, and its last checkpoint.

A cluster's sandboxes live on many nodes, and a node can die with its records. This
table is what survives it: the node a sandbox was placed on and whether it still runs
there (`state`: live, lost with its node, or parked by a drain until its next wake),
its record as last seen (so it can be started again elsewhere with the same id, spec and
times), the manifest of its last checkpoint in the snapshot store and when that was
taken, and its last loss: when, and how many seconds of work since the checkpoint it
lost. The embedded single-node server does not use it.
"""

from __future__ import annotations

from cloche.store.engine import Tx, run_script

DESCRIPTION = "placements: each sandbox's node, record and last checkpoint (cluster mode)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS placements (
    sandbox_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    checkpoint TEXT,
    checkpoint_at REAL,
    lost_at REAL,
    lost_work_s REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS placements_node ON placements (node);
"""


def up(tx: Tx) -> None:
    run_script(tx, SCHEMA)
