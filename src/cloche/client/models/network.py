"""A sandbox's network: the policy you set (strict: unknown fields are refused, so a
misspelt option cannot widen it), the status the server reports (lenient), and ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import ApiModel


class NetworkRule(BaseModel):
    """One egress rule with a port or protocol restriction.

    A plain string is a rule too and usually enough: ``"198.51.100.0/24"``,
    ``"api.example.com"``, ``"*.example.com"`` (every name below it),
    ``"api.example.com:443"`` or ``"198.51.100.10:8000-8100"``.

    Unknown fields are rejected, so a misspelt option cannot silently widen a policy.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: str = Field(description="IPv4 address, CIDR, host name or *.wildcard name.")
    ports: int | str | None = Field(None, description='A port, or an inclusive range like "8000-8100"; all if None.')
    protocol: Literal["tcp", "udp"] | None = Field(None, description="tcp or udp; both (and any other) if None.")


Rule = str | NetworkRule
"""An egress rule: a string such as ``"api.example.com:443"`` or a :class:`NetworkRule`."""


class EgressProxyTLS(BaseModel):
    """TLS to the egress proxy: always verified, TLS 1.2 or newer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server_name: str | None = Field(None, description="SNI and certificate name (default: the proxy's host).")
    ca_cert: str | None = Field(None, description="PEM CA certificates; they replace the system trust store.")


class EgressProxy(BaseModel):
    """A SOCKS5 proxy you run, through which the sandbox's outbound TCP is tunnelled
    (after the policy's filtering). Egress fails closed when it is down. The server
    never returns ``password`` or ``tls.ca_cert``.

    Example::

        EgressProxy(address="proxy.example.com:1080", username="u", password="p", tls=True)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(..., description='"host:port"; must resolve to a public address.')
    username: str | None = Field(None, description="RFC 1929 username.")
    password: str | None = Field(None, description="RFC 1929 password.")
    tls: bool | EgressProxyTLS = Field(False, description="TLS to the proxy.")


class HostRule(BaseModel):
    """A transform the node's egress proxy applies to requests to one host: set these
    headers. Values may name a tenant secret as ``${secret:NAME}``; the value is filled
    in outside the sandbox, and only for hosts the secret allows.

    Example::

        HostRule(headers={"Authorization": "Bearer ${secret:gh_token}"})
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict, description="Headers to set (replacing the sandbox's).")

    def to_json(self) -> dict[str, Any]:
        return {"transform": {"headers": self.headers}}


class NetworkPolicy(BaseModel):
    """What a sandbox may reach over the network, how fast, and who may reach its ports.

    A connection is judged in this order: the server's always-denied ranges (cloud
    metadata, link-local, the node, other sandboxes, private ranges); then a matching
    ``allow_out`` rule accepts it (an allow beats a deny); then a matching ``deny_out``
    rule rejects it; otherwise it is accepted, unless ``allow_out`` was given without
    ``deny_out`` (a pure allow list), which rejects everything it does not name.

    ``NetworkPolicy()`` is the open internet; ``NetworkPolicy(egress=False)`` is
    loopback only (like ``network="none"``).  Unknown fields are rejected when you build
    a policy, and dropped when a newer server reports one.

    Example::

        NetworkPolicy(allow_out=["pypi.org", "*.pythonhosted.org", NetworkRule(to="198.51.100.7", ports=443)])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    egress: bool = Field(True, description="False: no egress at all (loopback only, no DNS).")
    allow_out: list[Rule] | None = Field(
        None,
        description="Destinations always accepted; given without deny_out, the only ones (None: not given).",
    )
    deny_out: list[Rule] = Field(
        default_factory=list,
        description="Destinations rejected unless allow_out names them.",
    )
    dns_servers: list[str] = Field(
        default_factory=list,
        description="Upstream IPv4 resolvers for this sandbox (empty: the node's).",
    )
    max_connections: int | None = Field(None, description="Cap on concurrent outbound connections.")
    egress_mbps: float | None = Field(None, description="Upload bandwidth limit in Mbit/s.")
    ingress_mbps: float | None = Field(None, description="Download bandwidth limit in Mbit/s.")
    public: bool = Field(False, description="Exposed ports are reachable without the traffic token.")
    mask_request_host: str | None = Field(
        None,
        description="Host header sent to exposed ports (``${PORT}`` is replaced by the port).",
    )
    rules: dict[str, list[HostRule]] = Field(
        default_factory=dict,
        description="Per-host request transforms (secrets injected outside the sandbox).",
    )
    egress_proxy: EgressProxy | None = Field(None, description="Tunnel outbound TCP through your SOCKS5 proxy.")
    https_ports: list[int] = Field(
        default_factory=list,
        description="Exposed ports reached over TLS (not verified).",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_from_api(cls, value: Any) -> Any:
        """Accept the API's form, ``{"host": [{"transform": {"headers": {...}}}]}``, too."""
        if not isinstance(value, dict):
            return value
        return {host: [r.get("transform", r) if isinstance(r, dict) else r for r in rules]
                for host, rules in value.items()}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The policy as the API's ``network`` object (unset optional fields left out)."""
        out = self.model_dump(mode="json", exclude_none=True, exclude={"rules", "https_ports"})
        if self.rules:
            out["rules"] = {host: [r.to_json() for r in rules] for host, rules in self.rules.items()}
        if self.https_ports:
            out["https_ports"] = self.https_ports
        return out


NetworkSpec = Literal["none", "internet"] | NetworkPolicy | Mapping[str, Any]
"""What ``network=`` accepts: ``"none"`` (loopback only), ``"internet"``, a
:class:`NetworkPolicy` or the same policy as a plain dict (checked by the server)."""


def _known(model: type[BaseModel], value: Any) -> Any:
    """``value`` without the keys ``model`` does not know (what a newer server adds)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in model.model_fields}
    return value


class NetworkCounters(ApiModel):
    """A sandbox's traffic and DNS counters since it (last) started."""

    bytes_out: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    packets_in: int = 0
    denied_connections: int = Field(0, description="Outbound connections the policy rejected.")
    dns_queries: int = 0
    dns_refused: int = Field(0, description="Names the policy refused to resolve.")
    dns_rate_limited: int = Field(0, description="Queries dropped by the per-sandbox DNS rate limit.")


class NetworkStatus(ApiModel):
    """A sandbox's network: the policy in force, its address and its counters.

    Attributes:
        policy: The policy in force, normalised by the server (``"none"`` reads back as
            ``egress=False``, ``"internet"`` as the default policy).
        address: The sandbox's IPv4 address while it runs, else ``None``.
        counters: Traffic and DNS counters (``None`` when it is not running, and in
            sandbox listings).
    """

    policy: NetworkPolicy
    address: str | None = None
    counters: NetworkCounters | None = None

    @field_validator("policy", mode="before")
    @classmethod
    def _drop_unknown(cls, value: Any) -> Any:
        value = _known(NetworkPolicy, value)
        if isinstance(value, dict):
            for key in ("allow_out", "deny_out"):
                if isinstance(value.get(key), list):
                    value[key] = [_known(NetworkRule, rule) for rule in value[key]]
        return value


class PortUrls(ApiModel):
    """Where a port the sandbox listens on is reachable from outside.

    Attributes:
        port: The port inside the sandbox.
        url: Host-form URL, e.g. ``http://8000-sb_x.localhost:8787/``.
        path_url: Path-form URL under the API server, for when wildcard host names do
            not resolve, e.g. ``http://127.0.0.1:8787/v1/sandboxes/sb_x/ports/8000/``.
        token: The traffic token to send as ``X-Cloche-Traffic-Token`` (``None`` when the
            sandbox's policy is ``public``).
        signed_url: ``url`` with a signature that stands in for the token until it expires.
        public: Whether the port is reachable without the token.
    """

    port: int
    url: str
    path_url: str | None = None
    token: str | None = None
    signed_url: str | None = None
    public: bool = False
