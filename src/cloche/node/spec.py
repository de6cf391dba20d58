"""What a sandbox is made of: its template, limits and environment (runtime level)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cloche.constants import MAX_TIMEOUT_S
from cloche.node.errors import InvalidSpec
from cloche.node.net.policy import NetworkPolicy

MIN_CPU = 0.05  # below this even runc's own setup crawls
MAX_CPU = 64.0
MIN_MEMORY_MB = 32
MAX_MEMORY_MB = 256 * 1024
MAX_DISK_MB = 1024 * 1024
MIN_DISK_MB = 16
# Isolation tiers: runc (namespaces + seccomp on the host kernel) and gvisor (runsc: a
# user-space kernel between the sandbox and the host's).
ISOLATIONS = ("runc", "gvisor")


@dataclass(frozen=True)
class Limits:
    """Resource limits enforced by cgroups and the per-sandbox disk image."""

    cpu: float = 1.0
    memory_mb: int = 512
    disk_mb: int = 1024
    pids: int = 512
    inodes: int = 0  # 0: derived from disk_mb (one inode per 16 KiB)

    def validate(self) -> None:
        if not MIN_CPU <= self.cpu <= MAX_CPU:
            raise InvalidSpec(f"cpu must be between {MIN_CPU} and {MAX_CPU}, got {self.cpu}")
        if not MIN_MEMORY_MB <= self.memory_mb <= MAX_MEMORY_MB:
            raise InvalidSpec(f"memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}")
        if not MIN_DISK_MB <= self.disk_mb <= MAX_DISK_MB:
            raise InvalidSpec(f"disk_mb must be between {MIN_DISK_MB} and {MAX_DISK_MB}")
        if not 8 <= self.pids <= 65536:
            raise InvalidSpec("pids must be between 8 and 65536")
        if self.inodes and not 64 <= self.inodes <= 10_000_000:
            raise InvalidSpec("inodes must be between 64 and 10000000")

    @property
    def inode_count(self) -> int:
        return self.inodes or max(1024, self.disk_mb * 64)


@dataclass(frozen=True)
class IdlePolicy:
    """What happens to a sandbox nobody uses: pause (frozen, memory kept) after
    `pause_after_s`, hibernate (snapshot, nothing kept in memory) after
    `hibernate_after_s`; at `timeout_s` it is killed or hibernated (`on_timeout`)."""

    pause_after_s: float | None = None
    hibernate_after_s: float | None = None
    on_timeout: str = "kill"

    def validate(self) -> None:
        for name in ("pause_after_s", "hibernate_after_s"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= MAX_TIMEOUT_S:
                raise InvalidSpec(f"idle.{name} must be between 0 and 30 days")
        if self.on_timeout not in ("kill", "hibernate"):
            raise InvalidSpec("on_timeout must be 'kill' or 'hibernate'")


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to (re)create a sandbox on a node."""

    template: str = "base"
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    on_resume: str | None = None  # shell command run after waking from stopped/hibernated
    network: NetworkPolicy = field(default_factory=NetworkPolicy)  # the runtime's default: loopback only
    isolation: str = "runc"
    regions: tuple[str, ...] = ()  # data residency (cluster mode): it runs only on nodes in these regions

    def validate(self) -> None:
        self.limits.validate()
        if self.isolation not in ISOLATIONS:
            raise InvalidSpec(f"isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise InvalidSpec(f"invalid environment variable name {key!r}")
        if self.timeout_s is not None and not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise InvalidSpec("timeout_s must be between 0 and 30 days")
        self.idle.validate()
        if any(not r or len(r) > 63 for r in self.regions):
            raise InvalidSpec("regions must be region names of 1 to 63 characters")
        if self.on_resume is not None and (not self.on_resume or "\0" in self.on_resume):
            raise InvalidSpec("on_resume must be a non-empty shell command")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = self.network.to_json()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxSpec:
        return cls(
            template=data.get("template", "base"),
            limits=Limits(**data.get("limits", {})),
            env=dict(data.get("env", {})),
            timeout_s=data.get("timeout_s"),
            idle=IdlePolicy(**data.get("idle", {})),
            on_resume=data.get("on_resume"),
            network=NetworkPolicy.from_json(data.get("network", "none")),
            isolation=data.get("isolation", "runc"),
            regions=tuple(data.get("regions", ())),
        )
