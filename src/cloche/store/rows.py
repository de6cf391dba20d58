"""The store's records as the rest of cloche sees them, and how a row becomes one
(the same for both engines: rows are read by column name)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Tenant:
    id: str
    name: str
    is_admin: bool
    max_sandboxes: int
    max_cpu: float
    max_memory_mb: int
    created_at: float
    priority: int = 0  # scheduling priority: higher is admitted first and preempted last
    isolation: tuple[str, ...] = ()  # the isolation tiers its sandboxes may use (empty: any)


@dataclass
class SandboxRow:
    id: str
    tenant_id: str
    name: str | None
    template: str
    cpu: float
    memory_mb: int
    disk_mb: int
    metadata: dict[str, str]
    created_at: float


@dataclass
class SecretRow:
    tenant_id: str
    name: str
    ciphertext: bytes
    hosts: list[str]
    created_at: float
    updated_at: float


@dataclass
class SnapshotRow:
    id: str
    tenant_id: str
    name: str
    manifest: str
    sandbox_id: str
    template: str
    bytes: int
    created_at: float


@dataclass
class AppRow:
    tenant_id: str
    name: str
    version: int
    spec: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass
class AgentRow:
    tenant_id: str
    app: str
    key: str
    sandbox_id: str
    app_version: int
    created_at: float


def tenant_of(r: Any) -> Tenant:
    return Tenant(r["id"], r["name"], bool(r["is_admin"]), r["max_sandboxes"], r["max_cpu"],
                  r["max_memory_mb"], r["created_at"], r["priority"],
                  tuple(filter(None, r["isolation"].split(","))))  # fmt: skip


def app_of(r: Any) -> AppRow:
    return AppRow(r["tenant_id"], r["name"], r["version"], json.loads(r["spec"]), r["created_at"], r["updated_at"])


def secret_of(r: Any) -> SecretRow:
    return SecretRow(r["tenant_id"], r["name"], bytes(r["ciphertext"]), json.loads(r["hosts"]), r["created_at"],
                     r["updated_at"])  # fmt: skip


def sandbox_of(r: Any) -> SandboxRow:
    return SandboxRow(r["id"], r["tenant_id"], r["name"], r["template"], r["cpu"], r["memory_mb"],
                      r["disk_mb"], json.loads(r["metadata"]), r["created_at"])  # fmt: skip
