"""A sandbox's network policy: what it may reach, how fast, and who may reach it.

The model is E2B's, made explicit. `egress=False` is loopback-only networking (no
route out, no DNS). Otherwise `allow_out` and `deny_out` hold rules (IPv4 addresses or
CIDRs, host names, `*.wildcard` names, each optionally limited to ports and a protocol)
and a packet is judged in this order:

1. the always-denied set (metadata, link-local, the node, other sandboxes, private
   ranges the operator did not open) — enforced by the firewall, not written here;
2. an `allow_out` rule matches: accepted (an allow beats a deny);
3. a `deny_out` rule matches: rejected;
4. otherwise accepted, unless `allow_out` was given without `deny_out` (a pure allow
   list), which rejects everything it does not name.

Host-name rules work through cloche's resolver: a name an allow rule matches is
answered and its addresses are allowed for their TTL; a name a deny rule matches (or
any name a default-deny policy does not allow, when it has no address rules) is
refused. Parsing happens once, here, and every error names the field at fault.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from cloche.node.errors import InvalidSpec

MAX_RULES = 256
PROTOCOLS = ("tcp", "udp")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Rule:
    """One egress rule: `target` is a CIDR ("198.51.100.0/24"), a host name
    ("example.com") or a wildcard ("*.example.com": every name below it)."""

    target: str
    ports: tuple[int, int] | None = None  # inclusive range; None: every port
    protocol: str | None = None  # "tcp", "udp" or None for both (and any other protocol)

    @property
    def is_host(self) -> bool:
        return not _is_network(self.target)

    def matches_name(self, name: str) -> bool:
        if self.target.startswith("*."):
            return name.endswith(self.target[1:])
        return name == self.target

    def to_json(self) -> str | dict[str, Any]:
        if self.ports is None and self.protocol is None:
            return self.target
        out: dict[str, Any] = {"to": self.target}
        if self.ports is not None:
            low, high = self.ports
            out["ports"] = str(low) if low == high else f"{low}-{high}"
        if self.protocol is not None:
            out["protocol"] = self.protocol
        return out


@dataclass(frozen=True)
class NetworkPolicy:
    """Everything the firewall, the resolver, the shaper and the ingress proxy need."""

    egress: bool = False  # False: loopback only (`network: "none"`)
    allow_out: tuple[Rule, ...] | None = None  # None: not given
    deny_out: tuple[Rule, ...] = ()
    dns_servers: tuple[str, ...] = ()  # upstream resolvers for this sandbox (default: the node's)
    max_connections: int | None = None  # concurrent outbound connections
    egress_mbps: float | None = None
    ingress_mbps: float | None = None
    public: bool = False  # exposed ports reachable without the traffic token
    mask_request_host: str | None = None  # Host header sent to the sandbox's port ("${PORT}" is replaced)

    @property
    def default_accept(self) -> bool:
        return self.egress and not (self.allow_out is not None and not self.deny_out)

    def host_rules(self) -> list[tuple[int, Rule]]:
        """Allow rules by host name, with their index (the firewall's set per rule)."""
        return [(i, r) for i, r in enumerate(self.allow_out or ()) if r.is_host]

    def decide_name(self, name: str) -> tuple[bool, tuple[int, ...]]:
        """Whether the resolver answers `name`, and which allow rules it matched."""
        if not self.egress:
            return False, ()
        matched = tuple(i for i, r in self.host_rules() if r.matches_name(name))
        if matched:
            return True, matched
        if any(r.is_host and r.matches_name(name) for r in self.deny_out):
            return False, ()
        if self.default_accept:
            return True, ()
        has_address_rules = any(not r.is_host for r in self.allow_out or ())
        return has_address_rules, ()

    def to_json(self) -> dict[str, Any]:
        return {
            "egress": self.egress,
            "allow_out": None if self.allow_out is None else [r.to_json() for r in self.allow_out],
            "deny_out": [r.to_json() for r in self.deny_out],
            "dns_servers": list(self.dns_servers),
            "max_connections": self.max_connections,
            "egress_mbps": self.egress_mbps,
            "ingress_mbps": self.ingress_mbps,
            "public": self.public,
            "mask_request_host": self.mask_request_host,
        }

    @classmethod
    def from_json(cls, data: Any, *, field_name: str = "network") -> NetworkPolicy:
        """Parse the API's form: "none", "internet", or an object. Raises InvalidSpec
        naming the field for anything malformed; nothing is accepted half-parsed."""
        if data == "none":
            return cls(egress=False)
        if data == "internet" or data is None:
            return cls(egress=True)
        if not isinstance(data, dict):
            raise InvalidSpec(f'{field_name} must be "none", "internet" or an object')
        known = {"egress", "allow_out", "deny_out", "dns_servers", "max_connections", "egress_mbps",
                 "ingress_mbps", "public", "mask_request_host"}  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpec(f"{field_name}.{unknown[0]} is not a network option")
        egress = data.get("egress", True)
        if not isinstance(egress, bool):
            raise InvalidSpec(f"{field_name}.egress must be true or false")
        allow = data.get("allow_out")
        allow_rules = None if allow is None else _rules(allow, f"{field_name}.allow_out")
        deny_rules = _rules(data.get("deny_out") or [], f"{field_name}.deny_out")
        if len(allow_rules or ()) + len(deny_rules) > MAX_RULES:
            raise InvalidSpec(f"{field_name} has more than {MAX_RULES} rules")
        return cls(
            egress=egress,
            allow_out=allow_rules,
            deny_out=deny_rules,
            dns_servers=_dns_servers(data.get("dns_servers") or [], f"{field_name}.dns_servers"),
            max_connections=_optional_int(data.get("max_connections"), f"{field_name}.max_connections", 1, 1 << 20),
            egress_mbps=_optional_rate(data.get("egress_mbps"), f"{field_name}.egress_mbps"),
            ingress_mbps=_optional_rate(data.get("ingress_mbps"), f"{field_name}.ingress_mbps"),
            public=_bool(data.get("public", False), f"{field_name}.public"),
            mask_request_host=_mask(data.get("mask_request_host"), f"{field_name}.mask_request_host"),
        )


def _is_network(target: str) -> bool:
    try:
        ipaddress.ip_network(target, strict=False)
    except ValueError:
        return False
    return True


def parse_target(text: str, where: str) -> str:
    """A CIDR (normalised) or a host name (lower case, no trailing dot)."""
    if "://" in text:
        raise InvalidSpec(f"{where}: {text!r} is a URL; give a host name, address or CIDR (no scheme)")
    if "/" in text or text.replace(".", "").isdigit() or ":" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidSpec(f"{where}: {text!r} is not a valid IPv4 address or CIDR") from None
        if net.version != 4:
            raise InvalidSpec(f"{where}: {text!r} is IPv6; sandboxes have no IPv6 egress, so it cannot match")
        return str(net)
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
        if not labels:
            raise InvalidSpec(f"{where}: '*' alone is not a host name; omit allow_out to allow everything")
    if not name or len(name) > 253 or not labels or not all(_LABEL.match(label) for label in labels):
        raise InvalidSpec(f"{where}: {text!r} is not a valid host name")
    return name


def _ports(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\d{1,5}(-\d{1,5})?", value):
        low_s, _, high_s = value.partition("-")
        low, high = int(low_s), int(high_s or low_s)
    else:
        raise InvalidSpec(f'{where}: ports must be a port number or a range like "8000-8100"')
    if not 1 <= low <= high <= 65535:
        raise InvalidSpec(f"{where}: port {value} is out of range 1-65535")
    return low, high


def parse_rule(item: Any, where: str) -> Rule:
    """`"target"`, `"target:port"` or `{"to": target, "ports": "80" | 80 | "8000-8100", "protocol": "tcp"}`."""
    if isinstance(item, str):
        target, ports = item, None
        if item.count(":") == 1 and "://" not in item:
            target, port_text = item.split(":")
            ports = _ports(port_text, where)
        return Rule(parse_target(target, where), ports)
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"to", "ports", "protocol"})
        if unknown:
            raise InvalidSpec(f"{where}: unknown rule field {unknown[0]!r} (use to, ports, protocol)")
        if not isinstance(item.get("to"), str):
            raise InvalidSpec(f'{where}: a rule object needs "to" (a host name, address or CIDR)')
        protocol = item.get("protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            raise InvalidSpec(f"{where}: protocol must be tcp or udp, got {protocol!r}")
        ports = _ports(item["ports"], where) if item.get("ports") is not None else None
        if ports is not None and protocol is None:
            protocol = "tcp"
        return Rule(parse_target(item["to"], where), ports, protocol)
    raise InvalidSpec(f"{where}: a rule is a string or an object")


def _rules(items: Any, where: str) -> tuple[Rule, ...]:
    if not isinstance(items, list):
        raise InvalidSpec(f"{where} must be a list")
    if len(items) > MAX_RULES:
        raise InvalidSpec(f"{where} has more than {MAX_RULES} rules")
    return tuple(parse_rule(item, f"{where}[{i}]") for i, item in enumerate(items))


def _dns_servers(items: Any, where: str) -> tuple[str, ...]:
    if not isinstance(items, list) or len(items) > 4:
        raise InvalidSpec(f"{where} must be a list of at most 4 IPv4 addresses")
    out = []
    for item in items:
        try:
            addr = ipaddress.IPv4Address(item)
        except (ValueError, TypeError):
            raise InvalidSpec(f"{where}: {item!r} is not an IPv4 address") from None
        out.append(str(addr))
    return tuple(out)


def _optional_int(value: Any, where: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSpec(f"{where} must be an integer between {low} and {high}")
    return value


def _optional_rate(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.1 <= value <= 10_000:
        raise InvalidSpec(f"{where} must be a rate in Mbit/s between 0.1 and 10000")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(f"{where} must be true or false")
    return value


def _mask(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 253 or any(c in value for c in " \r\n\0/"):
        raise InvalidSpec(f'{where} must be a host name ("${{PORT}}" is replaced by the port)')
    return value
