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
refused. Parsing happens once (policy_parsing.py; the rule types are in rules.py), and
every error names the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloche.node.errors import InvalidSpec
from cloche.node.net import policy_parsing as parse
from cloche.node.net.rules import EgressProxy, HostRules, Rule, Transform


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
        allow_rules = None if allow is None else parse.rules(allow, f"{field_name}.allow_out")
        deny_rules = parse.rules(data.get("deny_out") or [], f"{field_name}.deny_out")
        if len(allow_rules or ()) + len(deny_rules) > parse.MAX_RULES:
            raise InvalidSpec(f"{field_name} has more than {parse.MAX_RULES} rules")
        return cls(
            egress=egress,
            allow_out=allow_rules,
            deny_out=deny_rules,
            dns_servers=parse.dns_servers(data.get("dns_servers") or [], f"{field_name}.dns_servers"),
            max_connections=parse.optional_int(
                data.get("max_connections"), f"{field_name}.max_connections", 1, 1 << 20
            ),
            egress_mbps=parse.optional_rate(data.get("egress_mbps"), f"{field_name}.egress_mbps"),
            ingress_mbps=parse.optional_rate(data.get("ingress_mbps"), f"{field_name}.ingress_mbps"),
            public=parse.boolean(data.get("public", False), f"{field_name}.public"),
            mask_request_host=parse.mask(data.get("mask_request_host"), f"{field_name}.mask_request_host"),
            rules=parse.host_rules(data.get("rules") or {}, f"{field_name}.rules"),
            egress_proxy=parse.egress_proxy(data.get("egress_proxy"), f"{field_name}.egress_proxy"),
            https_ports=parse.port_list(data.get("https_ports") or [], f"{field_name}.https_ports"),
        )
