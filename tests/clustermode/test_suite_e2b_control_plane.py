"""The E2B control-plane flows (tests/e2b/test_control_plane.py) on a three-node cluster:
metrics, logs, refresh, pause and resume across replicas."""

from __future__ import annotations

from tests.e2b.test_control_plane import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
