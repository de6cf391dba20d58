"""The fields of a new sandbox, spelled once.

``client.sandboxes.create`` keeps its keyword signature on both faces (users call it so,
and its docstring documents each field), but everything past the signature — the JSON
body, the read timeout, and the CLI's ``sandbox create`` — goes through
:class:`SandboxSpec`, so a new field is added here and in the two signatures only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ._wire import compact, idle_body, network_body
from .models import IdlePolicy, NetworkSpec


@dataclass(frozen=True)
class SandboxSpec:
    """What ``POST /v1/sandboxes`` may say; ``None`` leaves a field to the server."""

    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_s: float | None = None
    name: str | None = None
    metadata: Mapping[str, str] | None = None
    env: Mapping[str, str] | None = None
    idle: IdlePolicy | Mapping[str, float | None] | None = None
    on_timeout: str | None = None
    on_resume: str | None = None
    snapshot: str | None = None
    wait_s: float | None = None
    region: str | None = None
    network: NetworkSpec | None = None
    isolation: str | None = None
    regions: Sequence[str] | None = None

    @classmethod
    def of(cls, args: Mapping[str, Any], **overrides: Any) -> SandboxSpec:
        """The spec from a mapping holding (at least) every field, e.g. a ``create``
        method's ``locals()``; ``overrides`` replace entries of ``args``."""
        given = {**args, **overrides}
        return cls(**{f.name: given[f.name] for f in fields(cls)})

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``client.sandboxes.create``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def body(self) -> dict[str, Any]:
        """The JSON body: only the fields given (mappings copied, policies encoded)."""
        given = self.kwargs()
        given["metadata"] = None if self.metadata is None else dict(self.metadata)
        given["env"] = None if self.env is None else dict(self.env)
        given["idle"] = idle_body(self.idle)
        given["network"] = None if self.network is None else network_body(self.network)
        given["regions"] = None if self.regions is None else list(self.regions)
        return compact(**given)
