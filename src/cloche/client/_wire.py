"""JSON encodings of the SDK's argument types, shared by every request that sends them.

A policy model, a plain mapping or a literal all become the same JSON here, so the
sandbox spec, the app deployment and the network calls agree on the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from .models import IdlePolicy, NetworkPolicy, NetworkSpec


def compact(**fields: Any) -> dict[str, Any]:
    """The fields that are given (not ``None``): the server defaults the rest."""
    return {k: v for k, v in fields.items() if v is not None}


def idle_body(idle: IdlePolicy | Mapping[str, float | None] | None) -> dict[str, Any] | None:
    """An idle policy's JSON, leaving out the limits not set."""
    if idle is None:
        return None
    if isinstance(idle, IdlePolicy):
        return idle.model_dump(exclude_none=True)
    return {k: v for k, v in idle.items() if v is not None}


def rule_body(rule: Any) -> Any:
    """A network rule's JSON: a model dumped, a string or mapping as given."""
    return rule.model_dump(mode="json", exclude_none=True) if isinstance(rule, BaseModel) else rule


def network_body(network: NetworkSpec) -> str | dict[str, Any]:
    """The JSON of a ``network`` value: ``"none"``, ``"internet"`` or a policy object.

    A :class:`NetworkPolicy` leaves out its unset optional limits; a mapping is sent as
    given (rule models in it are converted), so the server judges it and names the field
    at fault in an :class:`InvalidRequest`.
    """
    if isinstance(network, str):
        return network
    if isinstance(network, NetworkPolicy):
        return network.to_json()
    if isinstance(network, Mapping):
        body = dict(network)
        for key in ("allow_out", "deny_out"):
            rules = body.get(key)
            if isinstance(rules, list | tuple):
                body[key] = [rule_body(rule) for rule in rules]
        return body
    raise TypeError(f'network must be "none", "internet", a NetworkPolicy or a dict, not {type(network).__name__}')
