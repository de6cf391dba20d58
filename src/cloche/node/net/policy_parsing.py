"""Parsing the API's `network` field into a NetworkPolicy's parts, strictly.

Why it exists: the policy arrives as JSON from users; each field has its own shape
and limits (rule strings and objects, port ranges, rates, header transforms, a SOCKS5
proxy with TLS), and every error must name the field at fault. That validation is
most of the policy's code, so it lives apart from the model it fills.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cloche.node.errors import InvalidSpec
from cloche.node.net.rules import PLACEHOLDER, SECRET_NAME, EgressProxy, HostRules, Rule, Transform, is_network

MAX_RULES = 256
MAX_TRANSFORM_HEADERS = 32
MAX_HEADER_VALUE = 8192
MAX_PROXY_CA_BYTES = 8192
PROTOCOLS = ("tcp", "udp")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")


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


def rules(items: Any, where: str) -> tuple[Rule, ...]:
    if not isinstance(items, list):
        raise InvalidSpec(f"{where} must be a list")
    if len(items) > MAX_RULES:
        raise InvalidSpec(f"{where} has more than {MAX_RULES} rules")
    return tuple(parse_rule(item, f"{where}[{i}]") for i, item in enumerate(items))


def port_list(items: Any, where: str) -> tuple[int, ...]:
    if not isinstance(items, list) or len(items) > 64:
        raise InvalidSpec(f"{where} must be a list of at most 64 port numbers")
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise InvalidSpec(f"{where}: {item!r} is not a port number")
        _ports(item, where)
    return tuple(sorted(set(items)))


def dns_servers(items: Any, where: str) -> tuple[str, ...]:
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


def optional_int(value: Any, where: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSpec(f"{where} must be an integer between {low} and {high}")
    return value


def optional_rate(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.1 <= value <= 10_000:
        raise InvalidSpec(f"{where} must be a rate in Mbit/s between 0.1 and 10000")
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(f"{where} must be true or false")
    return value


def mask(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 253 or any(c in value for c in " \r\n\0/"):
        raise InvalidSpec(f'{where} must be a host name ("${{PORT}}" is replaced by the port)')
    return value


def host_rules(items: Any, where: str) -> tuple[HostRules, ...]:
    if not isinstance(items, dict):
        raise InvalidSpec(f"{where} must be an object of host name -> list of rules")
    if len(items) > MAX_RULES:
        raise InvalidSpec(f"{where} has more than {MAX_RULES} hosts")
    out = []
    for key, rules in items.items():
        at = f"{where}[{key!r}]"
        host = parse_target(str(key), at)
        if is_network(host):
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


def egress_proxy(value: Any, where: str) -> EgressProxy | None:
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
