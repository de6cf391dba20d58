"""deploy/compose/docker-compose.yml, checked offline.

Why: compose resolves its references only when it starts the fleet, so a service that
depends on a misspelt one, an undeclared volume or a URL naming no service fails then,
on the user's machine. Here the file is parsed with PyYAML (merge keys and all) and
every reference between its services is followed, as are the `cloche` command lines.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy import cloche_cli

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "docker-compose.yml"
DOC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, dict[str, Any]] = DOC["services"]
CLOCHE = "/opt/cloche/.venv/bin/cloche"
# host:port after a scheme, a user or the start of a value: "etcd:2379", "http://seaweedfs:8333", "...@postgres:5432"
_HOST_PORT = re.compile(r"(?:^|//|@|[\"'\s])([a-z][a-z0-9-]*):\d+")


def _cloche_services() -> dict[str, list[str]]:
    """The services that run `cloche`, with what follows `cloche` on their command line."""
    return {name: s["command"] for name, s in SERVICES.items() if s.get("entrypoint", [""])[-1] == CLOCHE}


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_fleet_has_every_part() -> None:
    roles = {name: cloche_cli.split(argv)[0] for name, argv in _cloche_services().items()}
    assert sorted(roles.values()).count(("server",)) == 2
    assert sorted(roles.values()).count(("node", "run")) == 2
    assert {"postgres", "etcd", "seaweedfs"} <= set(SERVICES)


def test_services_depend_on_services_that_exist() -> None:
    for name, service in SERVICES.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in SERVICES, f"{name} depends on {needed}"
            # a one-shot finishes; waiting for it to be healthy would wait forever, and the reverse
            one_shot = SERVICES[needed].get("restart") == "no"
            assert (how["condition"] == "service_completed_successfully") == one_shot, f"{name} -> {needed}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[needed], f"{name} waits for {needed}'s health, which it never reports"


def test_every_host_named_in_a_url_or_command_is_a_service() -> None:
    for name, service in SERVICES.items():
        for text in _strings({k: service.get(k) for k in ("environment", "command", "entrypoint")}):
            for host in _HOST_PORT.findall(text):
                assert host in SERVICES, f"{name}: {host!r} in {text!r}"


def test_volumes_configs_secrets_and_networks_are_declared() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("/") or source in DOC["volumes"], f"{name}: volume {source}"
        for kind in ("configs", "secrets"):
            for item in service.get(kind, []):
                assert item["source"] in DOC[kind], f"{name}: {kind} {item['source']}"
        assert set(service["networks"]) <= set(DOC["networks"]), name


def test_cloche_command_lines_name_real_commands() -> None:
    for name, argv in _cloche_services().items():
        cloche_cli.check(argv, name)


def test_each_node_listens_on_its_own_fixed_address() -> None:
    """A node's certificate and its etcd registration name its --listen address, so that
    address must be the one compose gives the node, inside the network, one per node."""
    subnet = ipaddress.ip_network(DOC["networks"]["cloche"]["ipam"]["config"][0]["subnet"])
    seen = set()
    for name, argv in _cloche_services().items():
        if cloche_cli.split(argv)[0] != ("node", "run"):
            continue
        host = argv[argv.index("--listen") + 1].rsplit(":", 1)[0]
        assert host == SERVICES[name]["networks"]["cloche"]["ipv4_address"], name
        assert ipaddress.ip_address(host) in subnet and host not in seen, name
        seen.add(host)
        assert argv[argv.index("--node-id") + 1] == name
        data_dir = argv[argv.index("--data-dir") + 1]
        assert any(v.split(":")[1] == data_dir and v.startswith(f"{name}-data:") for v in SERVICES[name]["volumes"])


def test_only_the_nodes_are_privileged() -> None:
    for name, argv in _cloche_services().items():
        service = SERVICES[name]
        if cloche_cli.split(argv)[0] == ("node", "run"):
            assert service["privileged"] is True and service["cgroup"] == "host", name
        else:
            assert not service.get("privileged") and service["user"].split(":")[0] != "0", name
            assert service["cap_drop"] == ["ALL"] and service["read_only"] is True, name


def test_each_node_credential_reaches_the_servers() -> None:
    """A node publishes its credential to CLUSTER_DIR/node-credentials/<id>, and the
    servers read it there: one volume, written by the nodes, read-only for the servers."""
    for name, argv in _cloche_services().items():
        role = cloche_cli.split(argv)[0]
        if role not in (("node", "run"), ("server",)):
            continue
        target = argv[argv.index("--cluster-dir") + 1] + "/node-credentials"
        mounts = {v.split(":")[1]: v.split(":") for v in SERVICES[name]["volumes"]}
        expected = ["node-credentials", target] + (["ro"] if role == ("server",) else [])
        assert mounts[target] == expected, name
