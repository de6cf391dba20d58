"""How the node API's plain data crosses the network: every dataclass of the `Node`
interface as JSON (bytes fields as base64), and node errors as a JSON body naming their
class and code, so the client raises the very exception the node raised.

Why it is one module: the server and the client must agree on every encoding, and a
round-trip test over every type here proves they do.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import typing
from typing import Any, TypeVar

from cloche.node import errors
from cloche.node.net.policy import NetworkPolicy
from cloche.node.records import SandboxRecord
from cloche.node.spec import SandboxSpec

T = TypeVar("T")
ERROR_HEADER = "x-cloche-node-error"  # set on every error answer (the body is `error_body`)
_ERRORS: dict[str, type[errors.RuntimeFailure]] = {
    cls.__name__: cls
    for cls in (
        errors.RuntimeFailure,
        errors.SandboxNotFound,
        errors.InvalidState,
        errors.InvalidSpec,
        errors.TemplateNotFound,
        errors.FileError,
    )  # fmt: skip
}


@functools.cache
def _bytes_fields(cls: type) -> frozenset[str]:
    """Names of the fields typed `bytes` (or `bytes | None`)."""
    hints = typing.get_type_hints(cls)
    return frozenset(name for name, hint in hints.items() if hint is bytes or bytes in typing.get_args(hint))


def dump(obj: Any) -> Any:
    """A dataclass of the node interface as JSON-ready data."""
    if isinstance(obj, SandboxRecord):
        return obj.to_json()
    if isinstance(obj, SandboxSpec):
        return obj.to_dict()
    if isinstance(obj, NetworkPolicy):
        return obj.to_json()
    data = dataclasses.asdict(obj)
    for name in _bytes_fields(type(obj)):
        if data[name] is not None:
            data[name] = base64.b64encode(data[name]).decode()
    return data


def load(cls: type[T], data: Any) -> T:
    """The inverse of `dump`."""
    if cls is SandboxRecord:
        return typing.cast(T, SandboxRecord.from_json(data))
    if cls is SandboxSpec:
        return typing.cast(T, SandboxSpec.from_dict(data))
    if cls is NetworkPolicy:
        return typing.cast(T, NetworkPolicy.from_json(data))
    data = dict(data)
    for name in _bytes_fields(cls):
        if data.get(name) is not None:
            data[name] = base64.b64decode(data[name])
    return cls(**data)


def error_body(exc: errors.RuntimeFailure) -> dict[str, str]:
    kind = type(exc).__name__ if type(exc).__name__ in _ERRORS else "RuntimeFailure"
    return {"kind": kind, "code": exc.code, "message": str(exc)}


def error_from(body: dict[str, str]) -> errors.RuntimeFailure:
    """The exception an `error_body` describes, of the same class (and code)."""
    cls = _ERRORS.get(body.get("kind", ""), errors.RuntimeFailure)
    message = body.get("message", "node error")
    if cls is errors.FileError:
        return errors.FileError(message, body.get("code", "file_error"))
    return cls(message)
