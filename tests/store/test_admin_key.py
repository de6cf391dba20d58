"""Server replicas that start at once on a fresh database: each finds no admin tenant, one
creates it, and the other must take a key of that tenant instead of failing its start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cloche.config import Settings
from cloche.server.app import ensure_admin_key
from cloche.store.db import Store
from cloche.store.rows import Tenant


def test_replicas_racing_to_create_the_admin_tenant_both_start(open_store: Callable[..., Store], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    first, second = open_store(), open_store()
    settings = {name: Settings(data_dir=tmp_path / name) for name in ("a", "b")}
    for s in settings.values():
        s.data_dir.mkdir()
    looked_up = second.tenant_by_name

    def lost_the_race(name: str) -> Tenant | None:
        """The second replica looks, then the first creates the tenant before it acts."""
        monkeypatch.setattr(second, "tenant_by_name", looked_up)
        ensure_admin_key(first, settings["a"])
        return None

    monkeypatch.setattr(second, "tenant_by_name", lost_the_race)
    key_b = ensure_admin_key(second, settings["b"])
    key_a = settings["a"].admin_key_path.read_text().strip()
    assert key_a != key_b
    for store in (first, second):
        for key in (key_a, key_b):
            tenant = store.authenticate(key)
            assert tenant is not None and tenant.is_admin and tenant.name == "admin"
    assert settings["b"].admin_key_path.read_text().strip() == key_b
