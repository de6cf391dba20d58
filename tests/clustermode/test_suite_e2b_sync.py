"""The E2B held-in flows of the sync SDK (tests/e2b/test_sync.py) on a three-node cluster:
the official e2b SDK, unchanged, with E2B_API_URL and E2B_SANDBOX_URL at the cluster's
front, so its control calls and envd calls land on either replica."""

from __future__ import annotations

from tests.e2b.test_sync import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
