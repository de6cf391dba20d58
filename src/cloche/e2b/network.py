"""E2B's network options translated into cloche's network policy, and back.

E2B's model: everything is allowed unless `denyOut` names it, and `allowOut` entries
beat `denyOut` entries; `allow_internet_access=False` is `denyOut: ["0.0.0.0/0"]`.
In cloche's policy an `allow_out` without `deny_out` is a pure allow list, so an E2B
`allowOut` is only carried over when `denyOut` is present (alone it allows nothing
more than everything). The options cloche does not implement yet (per-host `rules`,
`egressProxy`, `httpsPorts`) are refused with a 400 naming the field, never accepted
and ignored.
"""

from __future__ import annotations

from typing import Any

from cloche.node.net.policy import NetworkPolicy

UNSUPPORTED = {
    "rules": "per-host transform rules",
    "egressProxy": "an egress SOCKS5 proxy",
    "httpsPorts": "HTTPS to exposed ports",
}
KNOWN = {"allowOut", "denyOut", "dnsServers", "allowPublicTraffic", "maskRequestHost", *UNSUPPORTED}


class NetworkOptionError(ValueError):
    """An E2B network option cloche refuses; the message names the field."""


def to_cloche(network: Any, allow_internet_access: Any, *, update: bool = False) -> dict[str, Any]:
    """The cloche policy object for E2B's `network` and `allow_internet_access`."""
    where = "network" if not update else "body"
    if network is None:
        network = {}
    if not isinstance(network, dict):
        raise NetworkOptionError(f"{where} must be an object")
    for name, what in UNSUPPORTED.items():
        if network.get(name) not in (None, {}, []):
            raise NetworkOptionError(f"{where}.{name} ({what}) is not supported by cloche yet")
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
    return policy


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
