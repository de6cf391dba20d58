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

Per-host `rules` (E2B's shape: `{"api.example.com": [{"transform": {"headers": {...}}}]}`)
do not open anything by themselves: they name hosts whose HTTP and HTTPS requests the
node's egress proxy rewrites, with `${secret:NAME}` placeholders filled in outside the
sandbox. `egress_proxy` tunnels the sandbox's outbound TCP through the user's SOCKS5
proxy. Both apply only to traffic the rules above already allow.

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
MAX_TRANSFORM_HEADERS = 32
MAX_HEADER_VALUE = 8192
MAX_PROXY_CA_BYTES = 8192
PROTOCOLS = ("tcp", "udp")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
# `${secret:NAME}` inside a header value; any other `${...}` is left as it is.
PLACEHOLDER = re.compile(r"\$\{secret:([^}]*)\}")


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
        return host_matches(self.target, name)

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
class Transform:
    """What the egress proxy does to a matching request: set these headers (replacing
    any the sandbox sent under the same name). Values may hold `${secret:NAME}`."""

    headers: tuple[tuple[str, str], ...] = ()

    def secrets(self) -> set[str]:
        return {m for _, value in self.headers for m in PLACEHOLDER.findall(value)}

    def to_json(self) -> dict[str, Any]:
        return {"transform": {"headers": dict(self.headers)}}


@dataclass(frozen=True)
class HostRules:
    """The transforms for one host name (or `*.wildcard`), applied in order."""

    host: str
    transforms: tuple[Transform, ...]

    def matches(self, name: str) -> bool:
        return host_matches(self.host, name)


@dataclass(frozen=True)
class EgressProxy:
    """The user's SOCKS5 proxy that carries the sandbox's outbound TCP (E2B's `egress_proxy`)."""

    host: str  # a host name or an IPv4 address
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    server_name: str | None = None  # SNI and the name the certificate must match (default: host)
    ca_cert: str | None = None  # PEM; replaces the system trust store for this proxy

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self, *, redact: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address}
        if self.username is not None:
            out["username"] = self.username
        if self.password is not None and not redact:
            out["password"] = self.password
        if self.tls:
            tls: dict[str, Any] = {}
            if self.server_name:
                tls["server_name"] = self.server_name
            if self.ca_cert and not redact:
                tls["ca_cert"] = self.ca_cert
            out["tls"] = tls or True
        return out


def host_matches(pattern: str, name: str) -> bool:
    """`pattern` is a host name or `*.suffix` (every name strictly below suffix)."""
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


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
    rules: tuple[HostRules, ...] = ()  # per-host request transforms, done by the node's egress proxy
    egress_proxy: EgressProxy | None = None
    https_ports: tuple[int, ...] = ()  # exposed ports the ingress reaches over TLS (not verified)

    @property
    def intercepts(self) -> bool:
        """Whether some of this sandbox's TCP goes through the node's egress proxy."""
        return self.egress and (bool(self.rules) or self.egress_proxy is not None)

    def transforms_for(self, name: str) -> tuple[Transform, ...]:
        """The transforms for requests to `name`: an exact host's rules win over a wildcard's."""
        matching = [r for r in self.rules if r.matches(name)]
        if not matching:
            return ()
        # exact before wildcard, then the longest wildcard; the first on a tie
        return max(matching, key=lambda r: (not r.host.startswith("*."), len(r.host))).transforms

    def secrets(self) -> dict[str, set[str]]:
        """Secret names each rule host's placeholders use."""
        return {r.host: set().union(*(t.secrets() for t in r.transforms)) for r in self.rules}

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
            "rules": {r.host: [t.to_json() for t in r.transforms] for r in self.rules},
            "egress_proxy": self.egress_proxy.to_json() if self.egress_proxy else None,
            "https_ports": list(self.https_ports),
        }

    def public_json(self) -> dict[str, Any]:
        """`to_json` without credentials: the proxy's password and CA are never returned."""
        out = self.to_json()
        if self.egress_proxy:
            out["egress_proxy"] = self.egress_proxy.to_json(redact=True)
        return out

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
                 "ingress_mbps", "public", "mask_request_host", "rules", "egress_proxy", "https_ports"}  # fmt: skip
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
            rules=_host_rules(data.get("rules") or {}, f"{field_name}.rules"),
            egress_proxy=_egress_proxy(data.get("egress_proxy"), f"{field_name}.egress_proxy"),
            https_ports=_port_list(data.get("https_ports") or [], f"{field_name}.https_ports"),
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


def _port_list(items: Any, where: str) -> tuple[int, ...]:
    if not isinstance(items, list) or len(items) > 64:
        raise InvalidSpec(f"{where} must be a list of at most 64 port numbers")
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise InvalidSpec(f"{where}: {item!r} is not a port number")
        _ports(item, where)
    return tuple(sorted(set(items)))


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


def _host_rules(items: Any, where: str) -> tuple[HostRules, ...]:
    if not isinstance(items, dict):
        raise InvalidSpec(f'{where} must be an object of host name -> list of rules')
    if len(items) > MAX_RULES:
        raise InvalidSpec(f"{where} has more than {MAX_RULES} hosts")
    out = []
    for key, rules in items.items():
        at = f"{where}[{key!r}]"
        host = parse_target(str(key), at)
        if _is_network(host):
            raise InvalidSpec(f"{at}: rules are keyed by host name (the proxy matches the request's host), "
                              "not by address")  # fmt: skip
        if not isinstance(rules, list) or not rules:
            raise InvalidSpec(f"{at} must be a non-empty list of rules")
        out.append(HostRules(host, tuple(_transform(rule, f"{at}[{i}]") for i, rule in enumerate(rules))))
    return tuple(out)


def _transform(rule: Any, where: str) -> Transform:
    if not isinstance(rule, dict) or set(rule) - {"transform"}:
        raise InvalidSpec(f'{where} must be an object {{"transform": {{"headers": {{...}}}}}}')
    transform = rule.get("transform") or {}
    if not isinstance(transform, dict) or set(transform) - {"headers"}:
        raise InvalidSpec(f'{where}.transform supports only "headers"')
    headers = transform.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_TRANSFORM_HEADERS:
        raise InvalidSpec(f"{where}.transform.headers must be an object of at most {MAX_TRANSFORM_HEADERS} headers")
    out = []
    for name, value in headers.items():
        at = f"{where}.transform.headers[{name!r}]"
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidSpec(f"{at}: not a valid HTTP header name")
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"):
            raise InvalidSpec(f"{at}: the {name} header cannot be set by a rule")
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\0"):
            raise InvalidSpec(f"{at}: the value must be a string of at most {MAX_HEADER_VALUE} characters, one line")
        for secret in PLACEHOLDER.findall(value):
            if not SECRET_NAME.match(secret):
                raise InvalidSpec(f"{at}: ${{secret:{secret}}} does not name a secret (letters, digits, _ . -)")
        out.append((name, value))
    return Transform(tuple(out))


def _egress_proxy(value: Any, where: str) -> EgressProxy | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidSpec(f'{where} must be an object {{"address": "host:port", ...}}')
    unknown = sorted(set(value) - {"address", "username", "password", "tls"})
    if unknown:
        raise InvalidSpec(f"{where}.{unknown[0]} is not an egress proxy option (address, username, password, tls)")
    address = value.get("address")
    if not isinstance(address, str) or address.count(":") != 1:
        raise InvalidSpec(f'{where}.address must be "host:port"')
    host_text, port_text = address.split(":")
    host = parse_target(host_text, f"{where}.address")
    if "/" in host and not host.endswith("/32") or host.startswith("*."):
        raise InvalidSpec(f"{where}.address: {host_text!r} is not one host")
    host = host.removesuffix("/32")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidSpec(f"{where}.address: port {port_text!r} is out of range 1-65535")
    username, password = value.get("username"), value.get("password")
    for name, item in (("username", username), ("password", password)):
        if item is not None and (not isinstance(item, str) or not 0 < len(item.encode()) <= 255):
            raise InvalidSpec(f"{where}.{name} must be a string of 1 to 255 bytes (RFC 1929)")
    if password is not None and username is None:
        raise InvalidSpec(f"{where}.password is only valid together with username")
    tls = value.get("tls", False)
    server_name = ca_cert = None
    if isinstance(tls, dict):
        unknown = sorted(set(tls) - {"server_name", "ca_cert"})
        if unknown:
            raise InvalidSpec(f"{where}.tls.{unknown[0]} is not a TLS option (server_name, ca_cert)")
        server_name, ca_cert = tls.get("server_name"), tls.get("ca_cert")
        if server_name is not None:
            server_name = parse_target(str(server_name), f"{where}.tls.server_name")
        if ca_cert is not None and (not isinstance(ca_cert, str) or "BEGIN CERTIFICATE" not in ca_cert
                                    or len(ca_cert.encode()) > MAX_PROXY_CA_BYTES):  # fmt: skip
            raise InvalidSpec(f"{where}.tls.ca_cert must be PEM certificates, at most {MAX_PROXY_CA_BYTES} bytes")
        tls = True
    elif not isinstance(tls, bool):
        raise InvalidSpec(f"{where}.tls must be true, false or an object")
    return EgressProxy(host, int(port_text), username, password, tls, server_name, ca_cert)
