"""The E2B code interpreter flows (tests/e2b/test_code_interpreter.py) on a three-node
cluster: run_code's state, streaming, errors and contexts through a remote node."""

from __future__ import annotations

from tests.e2b.test_code_interpreter import *  # noqa: F403 - its tests and fixtures, collected here against the cluster
