"""Request building and response parsing of the SDK's network calls (create's
``network=``, ``network()``, ``set_network()``, ``port_urls()``/``url()``) and of the
CLI's policy flags, over httpx.MockTransport (no server).

``url()``/``port_urls()`` are covered only here: the ``/urls/{port}`` route is not on
the server yet, so tests/integration/test_sdk_network.py cannot reach it.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cloche.cli import app, netpolicy, options, ui
from cloche.client import (
    AsyncClient,
    Client,
    InvalidRequest,
    NetworkPolicy,
    NetworkRule,
    NetworkStatus,
    PortUrls,
    SandboxInfo,
)
from cloche.client._api import network_body
from cloche.client.errors import status_for_code

SID = "sb_x"
POLICY = {
    "egress": True,
    "allow_out": ["api.example.com:443", {"to": "198.51.100.10", "ports": "8000-8100", "protocol": "tcp"}],
    "deny_out": ["198.51.100.0/24"],
    "dns_servers": [],
    "max_connections": None,
    "egress_mbps": None,
    "ingress_mbps": 10.0,
    "public": False,
    "mask_request_host": None,
}
COUNTERS = {
    "bytes_out": 1200,
    "packets_out": 12,
    "bytes_in": 4096,
    "packets_in": 9,
    "denied_connections": 2,
    "dns_queries": 5,
    "dns_refused": 1,
    "dns_rate_limited": 0,
}
URLS = {
    "port": 8000,
    "url": f"http://8000-{SID}.localhost:8787/",
    "path_url": f"http://127.0.0.1:8787/v1/sandboxes/{SID}/ports/8000/",
    "token": "tok123",
    "signed_url": f"http://8000-{SID}.localhost:8787/?cloche_sig=abc",
    "public": False,
}


def _sandbox(network: dict | None = None) -> dict:
    return {"id": SID, "state": "running", "network": network}


class FakeServer:
    """Records requests; answers like the server (policy echoed back, ``bad`` rejected)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.policy: dict = dict(POLICY)

    def body(self, index: int = -1) -> object:
        return json.loads(self.requests[index].content)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/sandboxes":
            return httpx.Response(
                201, json=_sandbox({"policy": self.policy, "address": "100.64.0.3", "counters": None})
            )
        if path == f"/v1/sandboxes/{SID}/network":
            if request.method == "PUT":
                body = json.loads(request.content)
                if isinstance(body, dict) and body.get("allow_out") == ["bad host!"]:
                    message = "network.allow_out[0]: 'bad host!' is not a host name, address or CIDR"
                    return httpx.Response(400, json={"error": {"code": "invalid_spec", "message": message}})
                self.policy = {**POLICY, "egress": False} if body == "none" else {**POLICY, **body}
            status = {"policy": self.policy, "address": "100.64.0.3", "counters": COUNTERS}
            return httpx.Response(200, json=status)
        if path == f"/v1/sandboxes/{SID}/urls/8000":
            return httpx.Response(200, json=URLS)
        if path == f"/v1/sandboxes/{SID}/urls/9000":
            return httpx.Response(200, json={**URLS, "port": 9000, "token": None, "signed_url": None, "public": True})
        if path == f"/v1/sandboxes/{SID}":
            return httpx.Response(200, json=_sandbox())
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"{path} not found"}})


@pytest.fixture()
def fake() -> FakeServer:
    return FakeServer()


def _client(fake: FakeServer) -> Client:
    return Client("http://cloche.test", "k", transport=httpx.MockTransport(fake))


# --- request bodies ------------------------------------------------------------------------


def test_network_body_forms():
    assert network_body("none") == "none" and network_body("internet") == "internet"
    policy = NetworkPolicy(allow_out=["pypi.org", NetworkRule(to="198.51.100.7", ports=443)], egress_mbps=5)
    assert network_body(policy) == {
        "egress": True,
        "allow_out": ["pypi.org", {"to": "198.51.100.7", "ports": 443}],
        "deny_out": [],
        "dns_servers": [],
        "egress_mbps": 5.0,
        "public": False,
    }
    # A dict goes as given (the server judges it), rule models inside converted.
    raw = {"deny_out": [NetworkRule(to="*.example.com", protocol="udp"), "x.org"], "future_option": 1}
    assert network_body(raw) == {"deny_out": [{"to": "*.example.com", "protocol": "udp"}, "x.org"], "future_option": 1}
    with pytest.raises(TypeError):
        network_body(["none"])  # type: ignore[arg-type]


def test_policy_model_rejects_unknown_fields_but_status_drops_them():
    with pytest.raises(ValueError, match="alow_out"):
        NetworkPolicy(alow_out=["x"])  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        NetworkRule(to="x", protocol="icmp")  # type: ignore[arg-type]
    newer = {**POLICY, "new_field": 1, "deny_out": [{"to": "a.org", "ports": "80", "protocol": "tcp", "new": 2}]}
    status = NetworkStatus.model_validate({"policy": newer, "address": None, "counters": None, "other": 3})
    assert status.policy.deny_out == [NetworkRule(to="a.org", ports="80", protocol="tcp")]
    info = SandboxInfo.model_validate(_sandbox({"policy": newer, "address": "100.64.0.9"}))
    assert info.network is not None and info.network.address == "100.64.0.9" and info.network.counters is None


def test_create_sends_network_only_when_given(fake: FakeServer):
    with _client(fake) as client:
        client.sandboxes.create()
        assert "network" not in fake.body()
        client.sandboxes.create(network="none")
        assert fake.body()["network"] == "none"
        sbx = client.sandboxes.create(network=NetworkPolicy(allow_out=["api.example.com:443"], public=True))
        assert fake.body()["network"] == {
            "egress": True,
            "allow_out": ["api.example.com:443"],
            "deny_out": [],
            "dns_servers": [],
            "public": True,
        }
        client.sandboxes.create(network={"allow_out": [NetworkRule(to="10.0.0.1", ports="53", protocol="udp")]})
        assert fake.body()["network"] == {"allow_out": [{"to": "10.0.0.1", "ports": "53", "protocol": "udp"}]}
    assert sbx.info.network is not None
    assert sbx.info.network.policy.allow_out == [
        "api.example.com:443",
        NetworkRule(to="198.51.100.10", ports="8000-8100", protocol="tcp"),
    ]
    assert sbx.info.network.policy.ingress_mbps == 10.0 and sbx.info.network.address == "100.64.0.3"


# --- network() and set_network() -----------------------------------------------------------


def test_network_reads_the_status_and_updates_info(fake: FakeServer):
    with _client(fake) as client:
        sbx = client.sandboxes.get(SID)
        assert sbx.info.network is None
        status = sbx.network()
    request = fake.requests[-1]
    assert (request.method, request.url.raw_path) == ("GET", f"/v1/sandboxes/{SID}/network".encode())
    assert status.address == "100.64.0.3" and status.policy.deny_out == ["198.51.100.0/24"]
    assert status.counters is not None and status.counters.bytes_in == 4096 and status.counters.dns_refused == 1
    assert sbx.info.network == status


def test_set_network_puts_the_policy(fake: FakeServer):
    with _client(fake) as client:
        sbx = client.sandboxes.get(SID)
        status = sbx.set_network("none")
        assert fake.requests[-1].method == "PUT" and fake.requests[-1].content == b'"none"'
        assert fake.requests[-1].headers["content-type"] == "application/json"
        assert status.policy.egress is False and sbx.info.network == status
        status = sbx.set_network(NetworkPolicy(deny_out=["203.0.113.0/24"], max_connections=50))
        assert fake.body() == {
            "egress": True,
            "deny_out": ["203.0.113.0/24"],
            "dns_servers": [],
            "max_connections": 50,
            "public": False,
        }
        assert status.policy.deny_out == ["203.0.113.0/24"] and status.policy.max_connections == 50


def test_bad_policy_is_invalid_request_naming_the_field(fake: FakeServer):
    assert status_for_code("invalid_spec") == 400
    with _client(fake) as client:
        sbx = client.sandboxes.get(SID)
        with pytest.raises(InvalidRequest) as caught:
            sbx.set_network({"allow_out": ["bad host!"]})
    assert caught.value.status == 400 and caught.value.code == "invalid_spec"
    assert caught.value.message.startswith("network.allow_out[0]:")
    assert sbx.info.network is None  # unchanged after a failure


# --- port URLs -----------------------------------------------------------------------------


def test_port_urls_and_url(fake: FakeServer):
    with _client(fake) as client:
        sbx = client.sandboxes.get(SID)
        urls = sbx.port_urls(8000, expires_s=60)
        assert fake.requests[-1].url.raw_path == f"/v1/sandboxes/{SID}/urls/8000?expires_s=60".encode()
        assert urls == PortUrls(**URLS)
        assert sbx.url(8000) == URLS["url"]
        assert fake.requests[-1].url.params["expires_s"] == "3600"
        assert sbx.url(8000, signed=True) == URLS["signed_url"]
        # public: no token, nothing signed; signed=True falls back to the plain URL
        assert sbx.url(9000, signed=True) == f"http://8000-{SID}.localhost:8787/"
        assert sbx.port_urls(9000).token is None
        count = len(fake.requests)
        for port in (0, 65536, True, "8000"):
            with pytest.raises(ValueError):
                sbx.url(port)  # type: ignore[arg-type]
        assert len(fake.requests) == count


# --- async mirrors sync --------------------------------------------------------------------


def test_async_client_mirrors_the_sync_calls(fake: FakeServer):
    async def scenario() -> None:
        async with AsyncClient("http://cloche.test", "k", transport=httpx.MockTransport(fake)) as client:
            sbx = await client.sandboxes.create(network={"allow_out": ["pypi.org"]})
            assert fake.body()["network"] == {"allow_out": ["pypi.org"]}
            status = await sbx.network()
            assert status.counters is not None and status.counters.denied_connections == 2
            assert sbx.info.network == status
            status = await sbx.set_network("none")
            assert fake.requests[-1].content == b'"none"' and status.policy.egress is False
            with pytest.raises(InvalidRequest, match=r"network\.allow_out\[0\]"):
                await sbx.set_network(NetworkPolicy(allow_out=["bad host!"], deny_out=[]))
            assert (await sbx.port_urls(8000)).token == "tok123"
            assert await sbx.url(8000) == URLS["url"]
            assert await sbx.url(8000, signed=True, expires_s=10) == URLS["signed_url"]
            assert fake.requests[-1].url.params["expires_s"] == "10"

    asyncio.run(scenario())


def test_sync_and_async_sandboxes_have_the_same_network_methods():
    from cloche.client import AsyncSandbox, Sandbox

    for name in ("network", "set_network", "port_urls", "url"):
        sync_method, async_method = getattr(Sandbox, name), getattr(AsyncSandbox, name)
        assert asyncio.iscoroutinefunction(async_method) and not asyncio.iscoroutinefunction(sync_method)
        assert sync_method.__doc__ and async_method.__doc__
        assert (
            sync_method.__code__.co_varnames[: sync_method.__code__.co_argcount]
            == (async_method.__code__.co_varnames[: async_method.__code__.co_argcount])
        )


# --- CLI parsing (no server) ---------------------------------------------------------------


def test_cli_rules_and_policy_flags(tmp_path: Path):
    assert netpolicy.cli_rule("api.example.com:443", "--allow-out") == "api.example.com:443"
    assert netpolicy.cli_rule("198.51.100.0/24", "--allow-out") == "198.51.100.0/24"
    assert netpolicy.cli_rule("10.0.0.1:53/udp", "--allow-out") == {"to": "10.0.0.1", "ports": "53", "protocol": "udp"}
    assert netpolicy.cli_rule("10.0.0.0/8/tcp", "--deny-out") == {"to": "10.0.0.0/8", "protocol": "tcp"}
    assert netpolicy.cli_rule('{"to": "a.org", "ports": 80}', "--deny-out") == {"to": "a.org", "ports": 80}

    assert netpolicy.parse_network(None, "--network") is None
    assert netpolicy.parse_network("none", "--network") == "none"
    assert netpolicy.parse_network('{"egress": false}', "--network") == {"egress": False}
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({"allow_out": ["a.org"]}))
    assert netpolicy.parse_network(f"@{policy_file}", "--network") == {"allow_out": ["a.org"]}
    for bad in ("nonsense", "[1]", "{not json", f"@{tmp_path / 'missing.json'}"):
        with pytest.raises(typer.BadParameter):
            netpolicy.parse_network(bad, "--network")

    spec = netpolicy.network_spec({"allow_out": ["a.org"]}, ["b.org"], ["c.org"], True, "--network")
    assert spec == {"allow_out": ["a.org", "b.org"], "deny_out": ["c.org"], "public": True}
    assert netpolicy.network_spec("internet", None, ["c.org"], False, "--network") == {"deny_out": ["c.org"]}
    assert netpolicy.network_spec("internet", None, None, False, "--network") == "internet"
    with pytest.raises(typer.BadParameter):
        netpolicy.network_spec("none", ["a.org"], None, False, "--network")


class CliResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr
        self.output = stdout + stderr


def _run(fake: FakeServer, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    """Run the CLI in-process against the fake server, capturing its two consoles."""
    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(options, "Client", lambda url, api_key: _client(fake))
    monkeypatch.setattr(ui, "out", Console(file=stdout, width=200, no_color=True))
    monkeypatch.setattr(ui, "err", Console(file=stderr, width=200, no_color=True))
    result = CliRunner().invoke(app, list(args))
    return CliResult(result.exit_code, stdout.getvalue() + result.stdout, stderr.getvalue())


def test_cli_port_prints_the_url_and_the_token_line(fake: FakeServer, monkeypatch: pytest.MonkeyPatch):
    result = _run(fake, monkeypatch, "port", SID, "8000")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == URLS["url"]  # the URL alone on stdout, for $(cloche port ...)
    assert f"curl -H 'X-Cloche-Traffic-Token: tok123' {URLS['url']}" in result.stderr
    result = _run(fake, monkeypatch, "port", SID, "8000", "--path")
    assert result.stdout.strip() == URLS["path_url"]
    result = _run(fake, monkeypatch, "port", SID, "8000", "--signed", "--expires", "120")
    assert result.exit_code == 0 and result.stdout.strip() == URLS["signed_url"] and "tok123" not in result.output
    assert fake.requests[-1].url.params["expires_s"] == "120"
    result = _run(fake, monkeypatch, "port", SID, "9000")
    assert "no token needed" in result.stderr
    result = _run(fake, monkeypatch, "port", SID, "8000", "--json")
    assert json.loads(result.stdout) == URLS
    assert _run(fake, monkeypatch, "port", SID, "0").exit_code == 2


def test_cli_network_set_builds_the_policy(fake: FakeServer, monkeypatch: pytest.MonkeyPatch):
    result = _run(fake, monkeypatch, "network", "set", SID, "--allow-out", "a.org:443", "--allow-out", "b.org/udp")
    assert result.exit_code == 0, result.output
    assert fake.body() == {"allow_out": ["a.org:443", {"to": "b.org", "protocol": "udp"}]}
    assert "allow out" in result.output and "a.org:443" in result.output
    result = _run(fake, monkeypatch, "network", "set", SID, "--none")
    assert result.exit_code == 0 and fake.requests[-1].content == b'"none"'
    count = len(fake.requests)
    assert _run(fake, monkeypatch, "network", "set", SID).exit_code == 2
    assert _run(fake, monkeypatch, "network", "set", SID, "--none", "--internet").exit_code == 2
    assert _run(fake, monkeypatch, "network", "set", SID, "--none", "--allow-out", "a.org").exit_code == 2
    assert len(fake.requests) == count
