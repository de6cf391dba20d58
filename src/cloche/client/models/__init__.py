"""Typed models for the JSON objects the Cloche API returns.

All models are immutable pydantic models that ignore unknown fields, so a newer server
that adds fields does not break an older SDK.

One module per resource (``sandboxes``, ``network``, ``exec``, ``files``, ``apps``,
``state``, ``secrets``, ``admin``) over ``base``; every public model is re-exported here,
so ``cloche.client.models.X`` is the one name to import.
"""

from __future__ import annotations

from .admin import (
    ApiKey,
    Health,
    NewTenant,
    NodeInfo,
    PoolInfo,
    Resources,
    TemplateInfo,
    Tenant,
)
from .apps import AgentInfo, AgentMove, AgentResponse, App, AppSpec
from .exec import (
    CodeError,
    CodeResult,
    ExecEvent,
    ExecExit,
    ExecOutput,
    ExecResult,
    ExecStart,
)
from .files import ArchiveResult, Entry, SkippedMember, WriteResult
from .network import (
    EgressProxy,
    EgressProxyTLS,
    HostRule,
    NetworkCounters,
    NetworkPolicy,
    NetworkRule,
    NetworkSpec,
    NetworkStatus,
    PortUrls,
    Rule,
)
from .sandboxes import IdlePolicy, Recovery, SandboxInfo, SandboxState, SnapshotInfo
from .secrets import SecretInfo, SecretKeyRotation
from .state import BatchResult, KeyInfo, KeyPage, LogEntry, LogPage, StateValue

__all__ = [
    "AgentInfo",
    "AgentMove",
    "AgentResponse",
    "ApiKey",
    "App",
    "AppSpec",
    "ArchiveResult",
    "BatchResult",
    "CodeError",
    "CodeResult",
    "EgressProxy",
    "EgressProxyTLS",
    "Entry",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStart",
    "Health",
    "HostRule",
    "IdlePolicy",
    "KeyInfo",
    "KeyPage",
    "LogEntry",
    "LogPage",
    "NetworkCounters",
    "NetworkPolicy",
    "NetworkRule",
    "NetworkSpec",
    "NetworkStatus",
    "NewTenant",
    "NodeInfo",
    "PoolInfo",
    "PortUrls",
    "Resources",
    "Rule",
    "Recovery",
    "SandboxInfo",
    "SandboxState",
    "SecretInfo",
    "SecretKeyRotation",
    "SkippedMember",
    "SnapshotInfo",
    "StateValue",
    "TemplateInfo",
    "Tenant",
    "WriteResult",
]
