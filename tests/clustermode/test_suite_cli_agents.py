"""The CLI's agents suite (tests/integration/test_cli_agents.py) on a three-node cluster:
`cloche app|agent|snapshot|state|demo` and `cloche sandbox hibernate|fork` through the
cluster's one address."""

from __future__ import annotations

from tests.integration.test_cli_agents import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
