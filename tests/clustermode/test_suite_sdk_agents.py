"""The SDK's agents suite (tests/integration/test_sdk_agents.py) on a three-node cluster
through both replicas: deploy and invoke, agent errors, hibernate/fork/snapshots, the
state KV and log, sync and async."""

from __future__ import annotations

from tests.integration.test_sdk_agents import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
