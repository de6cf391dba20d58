"""Network policies on the command line, shared by ``sandbox create`` and ``network set``:
the ``--network``/``--policy``/``--allow-out``/``--deny-out``/``--public`` flags parsed
into the API's policy value, and a policy (with its counters) rendered for people."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloche.cli import ui

if TYPE_CHECKING:
    from rich.table import Table

    from cloche.client.models import EgressProxy, NetworkPolicy, NetworkRule, NetworkStatus


RULE_HELP = (
    "HOST, *.DOMAIN, IP or CIDR, optionally with :PORT or :LOW-HIGH and /tcp or /udp "
    "(e.g. api.example.com:443, 198.51.100.0/24, 10.0.0.1:53/udp), or a JSON rule object (repeatable)."
)
AllowOutOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-out", metavar="RULE", help=f"Always allow this destination: {RULE_HELP}"),
]
DenyOutOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--deny-out", metavar="RULE", help=f"Deny this destination unless an allow rule names it: {RULE_HELP}"
    ),
]
PublicOpt = Annotated[bool, typer.Option("--public", help="Exposed ports are reachable without the traffic token.")]


def parse_network(value: str | None, param: str) -> str | dict[str, Any] | None:
    """``none``, ``internet``, ``@file.json`` (``@-``: stdin) or inline JSON -> a network value."""
    if value is None:
        return None
    text = value.strip()
    if text in ("none", "internet"):
        return text
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {source}: {exc.strerror or exc}", param_hint=param) from None
    elif not text.startswith(("{", '"')):
        raise typer.BadParameter(
            f"expected none, internet, @policy.json or a JSON policy, got {value!r}", param_hint=param
        )
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=param) from None
    if not isinstance(parsed, str | dict):
        raise typer.BadParameter('a policy is "none", "internet" or a JSON object', param_hint=param)
    return parsed


def cli_rule(text: str, param: str) -> str | dict[str, Any]:
    """A rule from the command line: the API's string form, ``...:PORTS/udp``, or JSON."""
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"not a valid JSON rule: {exc}", param_hint=param) from None
        if not isinstance(obj, dict):
            raise typer.BadParameter("a JSON rule is an object", param_hint=param)
        return obj
    for protocol in ("tcp", "udp"):
        if text.endswith(f"/{protocol}"):
            target, _, ports = text.removesuffix(f"/{protocol}").partition(":")
            rule: dict[str, Any] = {"to": target, "protocol": protocol}
            if ports:
                rule["ports"] = ports
            return rule
    return text


def network_spec(
    base: str | dict[str, Any] | None,
    allow_out: list[str] | None,
    deny_out: list[str] | None,
    public: bool,
    param: str,
) -> str | dict[str, Any] | None:
    """``base`` with the --allow-out/--deny-out/--public flags added (over the internet)."""
    if not (allow_out or deny_out or public):
        return base
    if base == "none" or (isinstance(base, dict) and base.get("egress") is False):
        raise typer.BadParameter("--allow-out, --deny-out and --public need egress, not none", param_hint=param)
    policy: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
    for key, rules, flag in (("allow_out", allow_out, "--allow-out"), ("deny_out", deny_out, "--deny-out")):
        if rules:
            previous = policy.get(key) or []
            if not isinstance(previous, list):
                raise typer.BadParameter(f"{key} in the policy must be a list", param_hint=param)
            policy[key] = [*previous, *(cli_rule(rule, flag) for rule in rules)]
    if public:
        policy["public"] = True
    return policy


def _rule_text(rule: str | NetworkRule) -> str:
    """A rule as the command line writes it (``HOST:PORTS/PROTO``)."""
    if isinstance(rule, str):
        return rule
    text = rule.to if rule.ports is None else f"{rule.to}:{rule.ports}"
    return f"{text}/{rule.protocol}" if rule.protocol else text


def _rules_text(rules: list[str | NetworkRule] | None) -> str:
    return ", ".join(_rule_text(r) for r in rules) if rules else "-"


def policy_summary(policy: NetworkPolicy) -> str:
    """One line: ``none``, ``internet``, ``allow list (3 rules)``, ..."""
    if not policy.egress:
        return "none (loopback only)"
    if policy.allow_out is not None and not policy.deny_out:
        kind = f"allow list ({len(policy.allow_out)} rules)"
    elif policy.allow_out or policy.deny_out:
        kind = f"internet with {len(policy.allow_out or [])} allow, {len(policy.deny_out)} deny rules"
    else:
        kind = "internet"
    return f"{kind}, public" if policy.public else kind


def _mbps(value: float | None) -> str:
    return f"{value:g} Mbit/s" if value is not None else "unlimited"


def _proxy_text(proxy: EgressProxy | None) -> str:
    if proxy is None:
        return "- (direct)"
    user = f"{proxy.username}@" if proxy.username else ""
    return f"socks5{'+tls' if proxy.tls else ''}://{user}{proxy.address}"


def network_detail(status: NetworkStatus) -> Table:
    """The ``network show`` view: the policy field by field, the address and the counters."""
    policy, counters = status.policy, status.counters
    rows: list[tuple[str, str]] = [
        ("policy", policy_summary(policy)),
        ("egress", "yes" if policy.egress else "no"),
        ("allow out", _rules_text(policy.allow_out) if policy.allow_out is not None else "- (not given)"),
        ("deny out", _rules_text(policy.deny_out)),
        ("dns servers", ", ".join(policy.dns_servers) or "node default"),
        ("max connections", str(policy.max_connections) if policy.max_connections is not None else "server default"),
        ("egress limit", _mbps(policy.egress_mbps)),
        ("ingress limit", _mbps(policy.ingress_mbps)),
        ("public ports", "yes (no token needed)" if policy.public else "no (traffic token needed)"),
        ("request host", policy.mask_request_host or "-"),
        ("https ports", ", ".join(map(str, policy.https_ports)) or "-"),
        (
            "request rules",
            "; ".join(
                f"{host}: set {', '.join(h for r in rules for h in r.headers)}" for host, rules in policy.rules.items()
            )
            or "-",
        ),
        ("egress proxy", _proxy_text(policy.egress_proxy)),
        ("address", status.address or "- (not running)"),
    ]
    if counters is None:
        rows.append(("counters", "- (not running)"))
    else:
        rows += [
            ("sent", f"{ui.size(counters.bytes_out)} in {counters.packets_out} packets"),
            ("received", f"{ui.size(counters.bytes_in)} in {counters.packets_in} packets"),
            ("denied connections", str(counters.denied_connections)),
            ("dns queries", f"{counters.dns_queries} ({counters.dns_refused} refused, "
                            f"{counters.dns_rate_limited} rate limited)"),
        ]  # fmt: skip
    return ui.details(rows)
