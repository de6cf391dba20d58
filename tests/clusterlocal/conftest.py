"""`cloche cluster local`'s pieces run alone here: its services' real processes and its
front over loopback servers. They touch nothing host-wide: no fake internet."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import mark_offline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_offline(items, Path(__file__).parent)
