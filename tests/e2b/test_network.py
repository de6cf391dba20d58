"""E2B's network options through the official SDK, unchanged: allow_internet_access,
network allow_out / deny_out, update_network, per-host rules with a secret injected by the
egress proxy, the SOCKS5 egress proxy, and https_ports. The traffic goes to the suite's
fake internet only."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from tests.e2b.conftest import E2bEnv
from tests.netlab import SOCKS_PASSWORD, SOCKS_USER

PROBE = "python3 -c \"import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 80), timeout=3); print('ok')\n" \
        "except OSError as e: print('no')\" "  # fmt: skip


def reach(sbx: Sandbox, host: str) -> str:
    return sbx.commands.run(PROBE + host).stdout.strip()


def cloche_policy(e2b: E2bEnv, sandbox_id: str) -> dict:
    with e2b.server.client(e2b.key) as c:
        return c.get(f"/v1/sandboxes/{sandbox_id}/network").json()["policy"]


def test_internet_by_default_and_none_without_it(e2b: E2bEnv, internet):
    with Sandbox.create() as sbx:
        assert reach(sbx, internet.hosts["allowed"]) == "ok"
    with Sandbox.create(allow_internet_access=False) as sbx:
        assert reach(sbx, internet.hosts["allowed"]) == "no"
        assert cloche_policy(e2b, sbx.sandbox_id)["egress"] is False


def test_allow_and_deny_lists_then_update_network(e2b: E2bEnv, internet):
    allowed, other = internet.hosts["allowed"], internet.hosts["other"]
    with Sandbox.create(network={"allow_out": [allowed], "deny_out": ["0.0.0.0/0"]}) as sbx:
        assert reach(sbx, allowed) == "ok" and reach(sbx, other) == "no"
        info = sbx.get_info()
        assert info.allow_internet_access is True
        sbx.update_network({"deny_out": [allowed]})
        assert reach(sbx, allowed) == "no" and reach(sbx, other) == "ok"
        assert cloche_policy(e2b, sbx.sandbox_id)["deny_out"] == [f"{allowed}/32"]


def test_rules_inject_a_tenant_secret_and_update_network_replaces_them(e2b: E2bEnv, internet):
    value = "e2b-" + secrets.token_hex(12)
    with e2b.server.client(e2b.key) as c:
        r = c.post("/v1/secrets", json={"name": "e2b_token", "value": value, "hosts": ["secure.test"]})
        assert r.status_code == 201, r.text
    rules = {"secure.test": [{"transform": {"headers": {"Authorization": "Bearer ${secret:e2b_token}"}}}]}
    with Sandbox.create(network={"rules": rules}) as sbx:
        internet.clear_recorded_requests()
        out = sbx.commands.run("curl -sS --fail https://secure.test/e2b")
        assert value not in out.stdout
        (seen,) = [q for q in internet.recorded_requests("secure") if q["path"] == "/e2b"]
        assert dict(seen["headers"])["Authorization"] == f"Bearer {value}"
        assert cloche_policy(e2b, sbx.sandbox_id)["rules"] == rules
        sbx.update_network({})  # the update replaces every egress rule: no transform any more
        internet.clear_recorded_requests()
        sbx.commands.run("curl -sS -o /dev/null https://secure.test/after || true")
        assert all("Authorization" not in dict(q["headers"]) for q in internet.recorded_requests("secure"))
    with pytest.raises(SandboxException, match="no secret named 'missing'"):
        Sandbox.create(network={"rules": {"secure.test": [{"transform": {"headers": {"X": "${secret:missing}"}}}]}})


def test_egress_proxy_is_used_and_internal_addresses_are_refused(e2b: E2bEnv, internet):
    internet.socks.start()
    proxy = {"address": f"{internet.hosts['socks']}:1080", "username": SOCKS_USER, "password": SOCKS_PASSWORD}
    with Sandbox.create(network={"egress_proxy": proxy}) as sbx:
        out = sbx.commands.run(f"curl -sS http://{internet.hosts['allowed']}/").stdout
        assert json.loads(out)["client"] == internet.hosts["socks"]  # the upstream saw the proxy, not the node
        shown = cloche_policy(e2b, sbx.sandbox_id)["egress_proxy"]
        assert shown == {"address": proxy["address"], "username": SOCKS_USER}  # never the password
    with pytest.raises(SandboxException, match="internal address"):
        Sandbox.create(network={"egress_proxy": {"address": "169.254.169.254:1080"}})


def test_https_ports_reach_the_sandboxs_tls_server(e2b: E2bEnv):
    serve = ("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=sbx -keyout /tmp/k.pem -out /tmp/c.pem "
             "-days 1 2>/dev/null && openssl s_server -quiet -accept 8443 -key /tmp/k.pem -cert /tmp/c.pem -www")
    with Sandbox.create(network={"https_ports": [8443]}) as sbx:
        sbx.commands.run(serve, background=True)
        r = _fetch(e2b, sbx.get_host(8443))
        assert r.status_code == 200 and "Ciphers supported" in r.text, r.text


SERVE = "python3 -m http.server 8000 --bind 0.0.0.0 --directory /tmp"


def _fetch(e2b: E2bEnv, host: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET http://{host}/ through cloche's port (the host name is in the Host header)."""
    for _ in range(100):
        r = httpx.get(f"{e2b.server.url}/", headers={"Host": host, **(headers or {})}, timeout=10)
        if r.status_code != 502:  # the in-sandbox server may still be starting
            return r
        time.sleep(0.05)
    return r


def test_get_host_reaches_the_sandboxs_port(e2b: E2bEnv):
    with Sandbox.create() as sbx:  # E2B's default: public traffic
        host = sbx.get_host(8000)
        assert host == f"8000-{sbx.sandbox_id}.localhost:{e2b.server.port}"
        sbx.commands.run(SERVE, background=True)
        r = _fetch(e2b, host)
        assert r.status_code == 200 and "Directory listing" in r.text
    with Sandbox.create(network={"allow_public_traffic": False}) as sbx:
        sbx.commands.run(SERVE, background=True)
        host = sbx.get_host(8000)
        assert _fetch(e2b, host).status_code == 401
        r = _fetch(e2b, host, {"e2b-traffic-access-token": sbx.traffic_access_token or ""})
        assert r.status_code == 200, r.text
