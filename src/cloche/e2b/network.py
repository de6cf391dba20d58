"""E2B's network options translated into cloche's network policy, and back.

E2B's model: everything is allowed unless `denyOut` names it, and `allowOut` entries
beat `denyOut` entries; `allow_internet_access=False` is `denyOut: ["0.0.0.0/0"]`.
In cloche's policy an `allow_out` without `deny_out` is a pure allow list, so an E2B
`allowOut` is only carried over when `denyOut` is present (alone it allows nothing
more than everything). Per-host `rules` (header transforms; cloche fills
`${secret:NAME}` placeholders from the tenant's secrets) and `egressProxy` (the user's
SOCKS5 proxy, `tls: {enabled, serverName, caCert}`) and `httpsPorts` (exposed ports
the ingress reaches over TLS) map onto the same fields of cloche's policy.
"""

from __future__ import annotations

from typing import Any

from cloche.node.net.policy import NetworkPolicy

KNOWN = {"allowOut", "denyOut", "dnsServers", "allowPublicTraffic", "maskRequestHost", "rules", "egressProxy",
         "httpsPorts"}  # fmt: skip


class NetworkOptionError(ValueError):
    """An E2B network option cloche refuses; the message names the field."""


def to_cloche(network: Any, allow_internet_access: Any, *, update: bool = False) -> dict[str, Any]:
    """The cloche policy object for E2B's `network` and `allow_internet_access`."""
    where = "network" if not update else "body"
    if network is None:
        network = {}
    if not isinstance(network, dict):
        raise NetworkOptionError(f"{where} must be an object")
    unknown = sorted(set(network) - KNOWN - ({"allow_internet_access"} if update else set()))
    if unknown:
        raise NetworkOptionError(f"{where}.{unknown[0]} is not a network option")
    if allow_internet_access is not None and not isinstance(allow_internet_access, bool):
        raise NetworkOptionError("allow_internet_access must be true or false")
    deny = _list(network.get("denyOut"), f"{where}.denyOut")
    allow = _list(network.get("allowOut"), f"{where}.allowOut")
    policy: dict[str, Any] = {
        "egress": allow_internet_access is not False,
        "deny_out": deny,
        "allow_out": allow if deny else None,
        "public": network.get("allowPublicTraffic", True),
        "mask_request_host": network.get("maskRequestHost"),
    }
    if network.get("dnsServers") is not None:
        policy["dns_servers"] = _list(network["dnsServers"], f"{where}.dnsServers")
    if network.get("httpsPorts"):
        policy["https_ports"] = network["httpsPorts"]
    if network.get("rules"):
        policy["rules"] = network["rules"]  # the same shape; cloche's parser names any fault
    if network.get("egressProxy") is not None:
        policy["egress_proxy"] = _egress_proxy(network["egressProxy"], f"{where}.egressProxy")
    return policy


def _egress_proxy(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        return value  # cloche's parser refuses it, naming the field
    out = {k: v for k, v in value.items() if k != "tls"}
    tls = value.get("tls")
    if isinstance(tls, dict):
        unknown = sorted(set(tls) - {"enabled", "serverName", "caCert"})
        if unknown:
            raise NetworkOptionError(f"{where}.tls.{unknown[0]} is not a TLS option")
        if tls.get("enabled", True):
            out["tls"] = {k: tls[e] for k, e in (("server_name", "serverName"), ("ca_cert", "caCert")) if tls.get(e)}
            out["tls"] = out["tls"] or True
    elif tls is not None:
        out["tls"] = tls
    return out


def to_e2b(policy: NetworkPolicy) -> dict[str, Any]:
    """The network part of E2B's sandbox detail."""
    out: dict[str, Any] = {
        "allowOut": [_rule(r) for r in policy.allow_out or ()],
        "denyOut": [_rule(r) for r in policy.deny_out] or ([] if policy.egress else ["0.0.0.0/0"]),
        "allowPublicTraffic": policy.public,
    }
    if policy.dns_servers:
        out["dnsServers"] = list(policy.dns_servers)
    if policy.mask_request_host:
        out["maskRequestHost"] = policy.mask_request_host
    if policy.https_ports:
        out["httpsPorts"] = list(policy.https_ports)
    if policy.rules:
        out["rules"] = {r.host: [t.to_json() for t in r.transforms] for r in policy.rules}
    if policy.egress_proxy:
        proxy = policy.egress_proxy.to_json(redact=True)
        if proxy.get("tls"):
            tls = proxy["tls"] if isinstance(proxy["tls"], dict) else {}
            proxy["tls"] = {"serverName": tls["server_name"]} if "server_name" in tls else {}
        out["egressProxy"] = proxy
    return out


def _rule(rule: Any) -> str:
    raw = rule.to_json()
    if isinstance(raw, str):
        return raw
    return f"{raw['to']}:{raw['ports']}" if "ports" in raw else raw["to"]


def _list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NetworkOptionError(f"{where} must be a list of strings")
    return value
