"""The E2B held-in flows of the async SDK (tests/e2b/test_async.py) on a three-node cluster."""

from __future__ import annotations

from tests.e2b.test_async import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
