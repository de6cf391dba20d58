"""Host-wide index claims (uid ranges, sandbox addresses): a marker a node left empty
when it was killed between creating it and writing its key cannot be reclaimed by any
node, so the orphan sweep removes it once it is older than the settle time; a marker
being written (young) and every marker that names a node stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cloche.node.orphans import drop_ownerless_claims
from cloche.node.uids import HostClaims


def test_an_old_empty_marker_is_dropped_and_owned_or_young_ones_stay(tmp_path: Path) -> None:
    claims = HostClaims(tmp_path / "net", 8, "sandbox address")
    owned = claims.allocate("0123456789")
    old_empty, young_empty = tmp_path / "net" / "5", tmp_path / "net" / "6"
    old_empty.touch()
    young_empty.touch()
    an_hour_ago = time.time() - 3600
    os.utime(old_empty, (an_hour_ago, an_hour_ago))
    os.utime(tmp_path / "net" / str(owned), (an_hour_ago, an_hour_ago))

    assert drop_ownerless_claims(tmp_path, settle_s=1.0) == 1
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == sorted([str(owned), "6"])
    assert claims.owned_by("0123456789") == [owned]
    assert 5 in [claims.allocate("0123456789") for _ in range(5)]  # the dropped index is free again
