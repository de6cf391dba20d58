"""Egress on gVisor: the sandbox's side is the Sentry's netstack, the node's side (veth,
nftables, resolver, egress proxy) is the same as runc's. Tests of test_egress.py and
test_egress_proxy.py, imported so that they are the same tests, against a server whose
default tier is gvisor: an allowed host by address, name and wildcard, a denied one
refused fast, DNS through the node's resolver, and a secret injected into https requests
by the egress proxy (never in the sandbox: not in its files, environment or memory,
the Sentry's memory included)."""

from __future__ import annotations

from tests.network.test_egress import (  # noqa: F401 - collected here against this module's server
    test_allowed_host_by_ip_and_by_name,
    test_denied_host_and_name_fail_fast,
)
from tests.network.test_egress_proxy import (  # noqa: F401
    recorded,
    test_https_requests_get_the_secret_and_the_sandbox_never_holds_it,
    token,
)

ISOLATION = "gvisor"


def test_the_sandboxes_are_gvisor_ones(client):
    r = client.post("/v1/sandboxes", json={})
    assert r.status_code == 201 and r.json()["isolation"] == "gvisor", r.text
