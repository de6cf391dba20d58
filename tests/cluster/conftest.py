"""Cluster-coordination fixtures: one real etcd for the session (each test works under a
key prefix of its own, so tests never see each other's keys) and a private etcd for the
tests that stop, restart or freeze it. They touch nothing host-wide: no fake internet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.cluster.local.etcd import EtcdServer
from tests.conftest import mark_offline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_offline(items, Path(__file__).parent)


@pytest.fixture(scope="package")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for this package's tests, stopped when they are done (before the leak check)."""
    with EtcdServer() as server:
        yield server


@pytest.fixture()
def private_etcd() -> Iterator[EtcdServer]:
    """An etcd of the test's own, to kill, restart or freeze."""
    with EtcdServer() as server:
        yield server


@pytest.fixture()
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:12]}/"
