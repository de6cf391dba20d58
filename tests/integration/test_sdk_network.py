"""Network policies through the SDK against a real `cloche up`: create with a policy,
read it back, replace it, and typed errors that name the field at fault.

These tests only read and write policies; no sandbox sends traffic anywhere (the
traffic tests live elsewhere).  Port URLs (``Sandbox.url``/``port_urls``) are covered
at the unit level only (tests/unit/test_client_network.py): the server's
``/v1/sandboxes/{id}/urls/{port}`` route is not there yet.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from cloche.client import (
    AsyncClient,
    Client,
    EgressProxy,
    EgressProxyTLS,
    HostRule,
    InvalidRequest,
    NetworkPolicy,
    NetworkRule,
    NotFound,
    Sandbox,
    SandboxInfo,
)
from tests.integration.conftest import Server

POLICY = NetworkPolicy(
    allow_out=["api.example.com:443", NetworkRule(to="198.51.100.10", ports="8000-8100", protocol="tcp")],
    deny_out=["198.51.100.0/24", "*.blocked.example"],
    dns_servers=["192.0.2.53"],
    max_connections=64,
    egress_mbps=20,
    ingress_mbps=50,
    public=True,
)


@pytest.fixture(scope="module")
def client(server: Server):
    _, key = server.tenant()
    with Client(server.url, key) as c:
        yield c


def test_create_with_a_policy_reads_it_back(client: Client):
    with client.sandboxes.create(network=POLICY) as sbx:
        created = sbx.info.network
        assert created is not None
        status = sbx.network()
        for seen in (created, status):
            policy = seen.policy
            assert policy.egress is True
            # the server normalises: "host:port" to a rule object, addresses to CIDRs
            assert policy.allow_out == [
                NetworkRule(to="api.example.com", ports="443"),
                NetworkRule(to="198.51.100.10/32", ports="8000-8100", protocol="tcp"),
            ]
            assert policy.deny_out == ["198.51.100.0/24", "*.blocked.example"]
            assert policy.dns_servers == ["192.0.2.53"]
            assert (policy.max_connections, policy.egress_mbps, policy.ingress_mbps) == (64, 20, 50)
            assert policy.public is True and policy.mask_request_host is None
        assert status.address is not None and ipaddress.ip_address(status.address).version == 4
        assert status.counters is not None and status.counters.denied_connections >= 0
        assert status.counters.dns_queries >= 0
        # GET of one sandbox carries the counters; so does the refreshed handle's info
        info = client.sandboxes.get(sbx.id).info
        assert info.network is not None and info.network.policy == status.policy
        assert info.network.counters is not None
        listed = [s.info for s in client.sandboxes.list() if s.id == sbx.id]
        assert listed[0].network is not None and listed[0].network.policy == status.policy


def test_rules_and_egress_proxy_read_back_without_credentials(client: Client):
    client.secrets.create("api_key", "s3cr3t-value", hosts=["api.example.com"])
    policy = NetworkPolicy(
        rules={"api.example.com": [HostRule(headers={"X-Api-Key": "${secret:api_key}"})]},
        egress_proxy=EgressProxy(address="198.51.100.80:1080", username="u", password="hidden",
                                 tls=EgressProxyTLS(server_name="socks.example")),
        https_ports=[8443],
    )  # fmt: skip
    with client.sandboxes.create(network=policy) as sbx:
        seen = sbx.network().policy
        assert seen.rules == policy.rules and seen.https_ports == [8443]
        assert seen.egress_proxy == EgressProxy(address="198.51.100.80:1080", username="u",
                                                tls=EgressProxyTLS(server_name="socks.example"))  # fmt: skip
        with pytest.raises(InvalidRequest, match="no secret named 'other'"):
            sbx.set_network(NetworkPolicy(rules={"api.example.com": [HostRule(headers={"A": "${secret:other}"})]}))
        with pytest.raises(InvalidRequest, match="may not be sent to other.example"):
            sbx.set_network(NetworkPolicy(rules={"other.example": [HostRule(headers={"A": "${secret:api_key}"})]}))


def test_create_with_none_and_internet(client: Client):
    with client.sandboxes.create(network="none") as sbx:
        status = sbx.network()
        assert status.policy.egress is False
    with client.sandboxes.create(network="internet") as sbx:
        policy = sbx.network().policy
        assert policy.egress is True and policy.allow_out is None and policy.deny_out == []
        assert policy.public is False


def test_create_with_a_plain_dict(client: Client):
    with client.sandboxes.create(network={"allow_out": ["pypi.org", "*.pythonhosted.org"]}) as sbx:
        policy = sbx.network().policy
        assert policy.allow_out == ["pypi.org", "*.pythonhosted.org"] and policy.deny_out == []


def test_set_network_replaces_the_whole_policy(client: Client):
    with client.sandboxes.create(network=POLICY) as sbx:
        status = sbx.set_network(NetworkPolicy(deny_out=["203.0.113.0/24"]))
        assert status.policy.deny_out == ["203.0.113.0/24"]
        assert status.policy.allow_out is None and status.policy.dns_servers == []
        assert status.policy.public is False and status.policy.max_connections is None
        assert sbx.info.network == status
        assert sbx.network().policy == status.policy

        assert sbx.set_network("none").policy.egress is False
        assert sbx.network().policy.egress is False
        internet = sbx.set_network("internet").policy
        assert internet.egress is True and internet.allow_out is None and internet.deny_out == []

        pure_allow = sbx.set_network({"allow_out": [{"to": "10.0.0.53", "ports": 53, "protocol": "udp"}]}).policy
        assert pure_allow.allow_out == [NetworkRule(to="10.0.0.53/32", ports="53", protocol="udp")]
        assert sbx.refresh().info.network is not None
        assert sbx.info.network.policy == pure_allow


def test_policy_survives_pause_and_resume(client: Client):
    with client.sandboxes.create(network=NetworkPolicy(allow_out=["api.example.com"])) as sbx:
        sbx.pause()
        assert sbx.network().policy.allow_out == ["api.example.com"]
        sbx.resume()
        assert sbx.network().policy.allow_out == ["api.example.com"]


@pytest.mark.parametrize(
    ("network", "field"),
    [
        ({"allow_out": ["bad host!"]}, "network.allow_out[0]"),
        ({"deny_out": ["198.51.100.0/24", {"to": "a.example", "ports": "99999"}]}, "network.deny_out[1]"),
        (NetworkPolicy(dns_servers=["not-an-ip"]), "network.dns_servers"),
        ({"max_connections": 0}, "network.max_connections"),
    ],
)
def test_a_bad_policy_is_a_typed_error_naming_the_field(client: Client, network, field: str):
    with client.sandboxes.create(network="internet") as sbx:
        before = sbx.network().policy
        with pytest.raises(InvalidRequest) as caught:
            sbx.set_network(network)
        assert caught.value.status == 400 and caught.value.code == "invalid_spec"
        assert caught.value.message.startswith(field), caught.value.message
        assert sbx.network().policy == before  # nothing changed
    count = len(client.sandboxes.list())
    with pytest.raises(InvalidRequest) as caught:
        client.sandboxes.create(network=network)
    assert caught.value.code == "invalid_spec" and caught.value.message.startswith(field)
    assert len(client.sandboxes.list()) == count  # nothing was created


def test_wrong_json_types_are_validation_errors_naming_the_field(client: Client):
    cases = [
        ("everything", "'none' or 'internet'"),
        ({"allow_out": "api.example.com"}, "allow_out"),
        ({"egress": [1]}, "egress"),
        ({"unknown_option": 1}, "unknown_option"),
        ({"deny_out": [{"to": "a.example", "protocol": "icmp"}]}, "protocol"),
    ]
    with client.sandboxes.create(network="none") as sbx:
        for network, field in cases:
            with pytest.raises(InvalidRequest) as caught:
                sbx.set_network(network)  # type: ignore[arg-type]
            assert (caught.value.status, caught.value.code) == (422, "validation_error")
            assert field in caught.value.message, caught.value.message
        assert sbx.network().policy.egress is False


def test_network_of_a_missing_sandbox_is_not_found(client: Client):
    ghost = Sandbox(client, SandboxInfo(id="sb_missing", state="unknown"))
    with pytest.raises(NotFound):
        ghost.network()
    with pytest.raises(NotFound):
        ghost.set_network("none")


def test_async_client_network(server: Server):
    _, key = server.tenant()

    async def scenario() -> None:
        async with AsyncClient(server.url, key) as client:
            async with await client.sandboxes.create(network=NetworkPolicy(deny_out=["198.51.100.0/24"])) as sbx:
                status = await sbx.network()
                assert status.policy.deny_out == ["198.51.100.0/24"] and status.counters is not None
                status = await sbx.set_network("none")
                assert status.policy.egress is False and sbx.info.network == status
                with pytest.raises(InvalidRequest) as caught:
                    await sbx.set_network({"allow_out": ["bad host!"]})
                assert caught.value.code == "invalid_spec" and "network.allow_out[0]" in caught.value.message
            assert await client.sandboxes.list() == []

    asyncio.run(scenario())
