"""The adversarial suite attacks sandboxes on both isolation tiers: its `node` is
`tier_node`, so every test with a sandbox runs on runc, then on gVisor (each module's
docstring says what differs there). It also attacks a real `cloche up` (`server`)."""

import pytest

from tests.integration.conftest import server  # noqa: F401 - pytest finds fixtures by name


@pytest.fixture(scope="module")
def node(tier_node):
    return tier_node
