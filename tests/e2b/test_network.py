"""E2B's network options through the official SDK, unchanged: allow_internet_access,
network allow_out / deny_out, update_network, and a clear error for what cloche does not
do yet. The traffic goes to the suite's fake internet only."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from tests.e2b.conftest import E2bEnv

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


def test_unsupported_network_options_are_refused_by_name(e2b: E2bEnv):
    with pytest.raises(SandboxException, match="https_ports|httpsPorts"):
        Sandbox.create(network={"https_ports": [3000]})
    with pytest.raises(SandboxException, match="rules"):
        Sandbox.create(network={"rules": {"api.example.com": [{"transform": {"headers": {"X": "y"}}}]}})


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
