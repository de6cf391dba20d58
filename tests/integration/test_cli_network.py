"""`cloche sandbox create --network ...`, `cloche network show/set` and `cloche port`,
run as subprocesses against a real `cloche up`.

Only policies are read and written; no sandbox sends traffic anywhere.  `cloche port`
is exercised for its help and argument checks only: the server's `/urls/{port}` route
is not there yet (its output is covered in tests/unit/test_client_network.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche import Client, NotFound
from tests.integration.conftest import Server
from tests.integration.test_cli import Tenant, cli


@pytest.fixture(scope="module")
def tenant(server: Server) -> Tenant:
    return Tenant(server)


@pytest.fixture()
def created(tenant: Tenant) -> Iterator[list[str]]:
    """Ids of sandboxes a test creates; killed afterwards."""
    ids: list[str] = []
    yield ids
    with Client(tenant.server.url, tenant.key) as c:
        for sid in ids:
            try:
                c.sandboxes.get(sid).kill()
            except NotFound:
                pass


def _create(tenant: Tenant, created: list[str], *args: str) -> str:
    sid = tenant.ok("sandbox", "create", *args).strip()
    created.append(sid)
    return sid


def _policy(tenant: Tenant, sid: str) -> dict:
    return json.loads(tenant.ok("network", "show", sid, "--json"))["policy"]


@pytest.mark.parametrize(
    "command", [["network"], ["network", "show"], ["network", "set"], ["port"]], ids=lambda c: " ".join(c)
)
def test_new_commands_have_help(command: list[str]):
    proc = cli(*command, "--help", url="http://127.0.0.1:9", key=None)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) > 3


def test_create_help_lists_the_network_options():
    text = cli("sandbox", "create", "--help", url="http://127.0.0.1:9", key=None).stdout
    for option in ("--network", "--allow-out", "--deny-out", "--public"):
        assert option in text


def test_create_network_none_and_show(tenant: Tenant, created: list[str]):
    sid = _create(tenant, created, "--network", "none")
    shown = tenant.ok("network", "show", sid)
    assert "none (loopback only)" in shown and "egress" in shown
    assert _policy(tenant, sid)["egress"] is False
    detail = tenant.ok("sandbox", "get", sid)
    assert "none (loopback only)" in detail


def test_create_with_rule_flags(tenant: Tenant, created: list[str]):
    sid = _create(tenant, created, "--allow-out", "api.example.com:443", "--allow-out", "192.0.2.53:53/udp",
                  "--deny-out", "198.51.100.0/24", "--public")  # fmt: skip
    policy = _policy(tenant, sid)
    assert policy["allow_out"] == [
        {"to": "api.example.com", "ports": "443", "protocol": None},
        {"to": "192.0.2.53/32", "ports": "53", "protocol": "udp"},
    ]
    assert policy["deny_out"] == ["198.51.100.0/24"] and policy["public"] is True and policy["egress"] is True
    shown = tenant.ok("network", "show", sid)
    for text in ("api.example.com:443", "192.0.2.53/32:53/udp", "198.51.100.0/24", "address", "denied connections"):
        assert text in shown, shown


def test_create_with_a_policy_file_and_inline_json(tenant: Tenant, created: list[str], tmp_path: Path):
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({"allow_out": ["pypi.org"], "egress_mbps": 10}))
    sid = _create(tenant, created, "--network", f"@{policy_file}", "--deny-out", "203.0.113.0/24")
    policy = _policy(tenant, sid)
    assert policy["allow_out"] == ["pypi.org"] and policy["deny_out"] == ["203.0.113.0/24"]
    assert policy["egress_mbps"] == 10
    out = tenant.ok("sandbox", "create", "--network", '{"deny_out": ["*.example.org"]}', "--json")
    info = json.loads(out)
    created.append(info["id"])
    assert info["network"]["policy"]["deny_out"] == ["*.example.org"]


def test_network_set_modes(tenant: Tenant, created: list[str], tmp_path: Path):
    sid = _create(tenant, created, "--network", "internet")
    shown = tenant.ok("network", "set", sid, "--allow-out", "pypi.org", "--allow-out", "*.pythonhosted.org")
    assert "allow list (2 rules)" in shown
    assert _policy(tenant, sid)["allow_out"] == ["pypi.org", "*.pythonhosted.org"]

    assert json.loads(tenant.ok("network", "set", sid, "--none", "--json"))["policy"]["egress"] is False
    assert _policy(tenant, sid)["egress"] is False

    policy_file = tmp_path / "p.json"
    policy_file.write_text(json.dumps({"deny_out": ["198.51.100.0/24"], "max_connections": 32}))
    tenant.ok("network", "set", sid, "--policy", f"@{policy_file}")
    policy = _policy(tenant, sid)
    assert policy["deny_out"] == ["198.51.100.0/24"] and policy["max_connections"] == 32
    assert policy["allow_out"] is None

    tenant.ok("network", "set", sid, "--policy", "@-", "--public", input='{"allow_out": ["a.example"]}')
    policy = _policy(tenant, sid)
    assert policy["allow_out"] == ["a.example"] and policy["public"] is True

    tenant.ok("network", "set", sid, "--internet")
    policy = _policy(tenant, sid)
    assert (policy["egress"], policy["allow_out"], policy["deny_out"], policy["public"]) == (True, None, [], False)


def test_bad_rules_are_short_errors_naming_the_field(tenant: Tenant, created: list[str]):
    sid = _create(tenant, created, "--network", "none")
    proc = tenant.run("network", "set", sid, "--allow-out", "bad host!")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error:" in proc.stderr and "network.allow_out[0]" in proc.stderr and "invalid_spec" in proc.stderr
    assert _policy(tenant, sid)["egress"] is False  # unchanged

    proc = tenant.run("sandbox", "create", "--deny-out", "a.example:99999")
    assert proc.returncode == 1 and "network.deny_out[0]" in proc.stderr, proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    "args",
    [
        ["network", "set", "SID"],
        ["network", "set", "SID", "--none", "--internet"],
        ["network", "set", "SID", "--none", "--allow-out", "a.example"],
        ["network", "set", "SID", "--policy", "not json"],
        ["sandbox", "create", "--network", "sometimes"],
        ["sandbox", "create", "--network", "none", "--public"],
        ["sandbox", "create", "--network", "@/nonexistent/policy.json"],
        ["port", "SID", "0"],
        ["port", "SID", "http"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_send_nothing(tenant: Tenant, args: list[str]):
    before = len(json.loads(tenant.ok("sandbox", "ls", "--json") or "[]"))
    proc = tenant.run(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(json.loads(tenant.ok("sandbox", "ls", "--json") or "[]")) == before


def test_network_of_an_unknown_sandbox(tenant: Tenant):
    proc = tenant.run("network", "show", "sb_nope")
    assert proc.returncode == 1 and "not_found" in proc.stderr
    proc = tenant.run("network", "set", "sb_nope", "--none")
    assert proc.returncode == 1 and "not_found" in proc.stderr


def test_request_rules_and_egress_proxy_from_a_policy_file(tenant: Tenant, created: list[str], tmp_path: Path):
    secret = tmp_path / "value"
    secret.write_text("not-shown-anywhere")
    tenant.ok("secret", "add", "cli_token", "--host", "api.example.com", "--value-file", str(secret))
    policy_file = tmp_path / "rules.json"
    policy_file.write_text(json.dumps({
        "rules": {"api.example.com": [{"transform": {"headers": {"Authorization": "Bearer ${secret:cli_token}"}}}]},
        "egress_proxy": {"address": "198.51.100.80:1080", "username": "me", "password": "pw"},
    }))  # fmt: skip
    sid = _create(tenant, created, "--network", f"@{policy_file}")
    shown = tenant.ok("network", "show", sid)
    assert "api.example.com: set Authorization" in shown and "socks5://me@198.51.100.80:1080" in shown
    proxy = _policy(tenant, sid)["egress_proxy"]
    assert (proxy["address"], proxy["username"], proxy.get("password")) == ("198.51.100.80:1080", "me", None)
    assert "not-shown-anywhere" not in shown
    other = {"other.example": [{"transform": {"headers": {"A": "${secret:cli_token}"}}}]}
    policy_file.write_text(json.dumps({"rules": other}))
    proc = tenant.run("network", "set", sid, "--policy", f"@{policy_file}")
    assert proc.returncode == 1 and "may not be sent to other.example" in proc.stderr, proc.stderr
