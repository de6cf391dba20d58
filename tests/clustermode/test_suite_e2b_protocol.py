"""The E2B wire protocol checks (tests/e2b/test_protocol.py) on a three-node cluster:
access checks, Connect framing and paths through a remote node."""

from __future__ import annotations

from tests.e2b.test_protocol import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
