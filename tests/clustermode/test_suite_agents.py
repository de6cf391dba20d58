"""The one-to-one agents suite (tests/integration/test_agents.py) on a three-node cluster
through both replicas: one instance per key across replicas, wake from hibernation on
whichever node, ordering, restarts, tenant privacy."""

from __future__ import annotations

from tests.integration.test_agents import *  # noqa: F403 - its tests and fixtures, collected here against the cluster

SKIP = {
    "test_a_planted_symlink_never_leads_to_another_tenants_agent": "it builds the path of the victim's agent "
    "socket from a single node's data directory, and a cluster has one per node",
    "test_invocations_for_one_key_keep_their_order": "a key's arrival numbers and one-at-a-time gate are "
    "per server replica, and the front spreads one key's invocations over both",
}
