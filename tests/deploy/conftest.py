"""The deployment manifests' checks read files and run `cloche ... --help`: they start no
node, server or sandbox, so they are offline (no fake internet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import mark_offline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_offline(items, Path(__file__).parent)
