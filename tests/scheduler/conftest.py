"""The scheduler's tests are pure, but for test_integration.py, which runs real servers:
the others run without the fake internet."""

from pathlib import Path

import pytest

from tests.conftest import mark_offline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_offline(items, Path(__file__).parent, but=("test_integration.py",))
