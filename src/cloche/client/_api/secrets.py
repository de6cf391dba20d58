"""Secret endpoints: store, list, update and delete secrets, and rotate the server's key."""

from __future__ import annotations

from collections.abc import Sequence

from .._wire import compact
from ..models import SecretInfo, SecretKeyRotation
from .call import Call, seg
from .responses import parse_items, parse_json, parse_none


def create_secret(name: str, value: str, hosts: Sequence[str]) -> Call[SecretInfo]:
    """``POST /v1/secrets``: store ``value`` (encrypted), sendable only to ``hosts``."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names, not a string")
    return Call(
        "POST", "/v1/secrets", parse_json(SecretInfo), json={"name": name, "value": value, "hosts": list(hosts)}
    )


def list_secrets() -> Call[list[SecretInfo]]:
    """``GET /v1/secrets``: names and hosts, never values."""
    return Call("GET", "/v1/secrets", parse_items(SecretInfo))


def get_secret(name: str) -> Call[SecretInfo]:
    """``GET /v1/secrets/{name}``."""
    return Call("GET", f"/v1/secrets/{seg(name)}", parse_json(SecretInfo))


def update_secret(name: str, value: str | None = None, hosts: Sequence[str] | None = None) -> Call[SecretInfo]:
    """``PUT /v1/secrets/{name}``: replace the value and/or the hosts (both: create if missing)."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names, not a string")
    body = compact(value=value, hosts=None if hosts is None else list(hosts))
    return Call("PUT", f"/v1/secrets/{seg(name)}", parse_json(SecretInfo), json=body)


def delete_secret(name: str) -> Call[None]:
    """``DELETE /v1/secrets/{name}``."""
    return Call("DELETE", f"/v1/secrets/{seg(name)}", parse_none)


def rotate_secret_key(drop_old: bool = False) -> Call[SecretKeyRotation]:
    """``POST /v1/secrets/rotate-key`` (admin): re-encrypt every secret under a new key."""
    params = {"drop_old": "true"} if drop_old else None
    return Call("POST", "/v1/secrets/rotate-key", parse_json(SecretKeyRotation), params=params)
