"""The value types a network policy is made of: an egress rule, a host's request
transforms, the user's SOCKS5 egress proxy, and how a host pattern matches a name.

Why it exists: the firewall, the resolver, the egress proxy and control's secrets all
use these small frozen types without needing the whole policy or its parser.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

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
        return not is_network(self.target)

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


def is_network(target: str) -> bool:
    try:
        ipaddress.ip_network(target, strict=False)
    except ValueError:
        return False
    return True
