"""Version 3: each cluster sandbox's region, its users' regions, and its replica.

With a snapshot store per region, a sandbox's files are readable only in the region
whose store holds them: `region` is that one (where it last ran, or where a move took
it). `history` is its agent's recent request regions (a `RegionHistory` as JSON) and
`last_move_at` its last move, for following the user. `replica_*` name the copy of its
last checkpoint the leader keeps in one other region's store, from which it resumes if
its whole region is lost.
"""

from __future__ import annotations

from cloche.store.engine import Tx, run_script

DESCRIPTION = "sandbox_regions: each sandbox's region, request regions, last move and checkpoint replica"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_regions (
    sandbox_id TEXT PRIMARY KEY,
    region TEXT,
    history TEXT,
    last_move_at REAL,
    replica_region TEXT,
    replica_manifest TEXT,
    replica_at REAL
);
"""


def up(tx: Tx) -> None:
    run_script(tx, SCHEMA)
