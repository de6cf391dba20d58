"""A node killed with sandboxes running: their links and policies are adopted by the
next start on the same data directory (nothing duplicated, the policy still enforced,
names still resolved), and once they are gone nothing of the node's network remains."""

from __future__ import annotations

import signal
import subprocess

from cloche.node.runtime import node_key
from tests.integration.conftest import Server
from tests.netlab import leftover_network_objects
from tests.network.conftest import create, probe


def _ours(key: str) -> tuple[list[str], list[str]]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return ([line for line in links.splitlines() if f"cloche:{key}:" in line],
            [line for line in tables.splitlines() if f"cloche_{key}" in line])  # fmt: skip


def test_kill_9_then_restart_adopts_links_and_policies(tmp_path, internet):
    server = Server(tmp_path / "data", pool_size=0)
    server.start()
    key = node_key(server.data_dir)
    try:
        _, api_key = server.tenant()
        with server.client(api_key) as c:
            sid = create(c, {"allow_out": ["allowed.test"]})
            address = c.get(f"/v1/sandboxes/{sid}").json()["network"]["address"]
        server.stop(signal.SIGKILL)
        links, tables = _ours(key)
        assert len(links) == 1 and len(tables) == 1  # the policy stays in force while the node is down

        server.start()
        with server.client(api_key) as c:
            body = c.get(f"/v1/sandboxes/{sid}").json()
            assert body["state"] == "running" and body["network"]["address"] == address
            resolved, allowed, denied = probe(c, sid, ["resolve", "allowed.test"],
                                              ["connect", internet.hosts["allowed"], 80],
                                              ["connect", internet.hosts["denied"], 80])  # fmt: skip
            assert resolved[0] == [internet.hosts["allowed"]]
            assert allowed[0] == "connected" and denied[0] == "ECONNREFUSED"
        assert len(_ours(key)[0]) == 1  # adopted, not duplicated
    finally:
        server.stop(signal.SIGKILL)
        server.wipe()
    assert _ours(key) == ([], [])
    found = leftover_network_objects(("clv", "clp", f"cloche_{key}"))
    assert found == {k: [] for k in found}, found
