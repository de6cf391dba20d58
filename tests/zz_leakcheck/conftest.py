"""The leak check starts nothing: in a session of its own it needs no fake internet."""

from pathlib import Path

import pytest

from tests.conftest import mark_offline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_offline(items, Path(__file__).parent)
