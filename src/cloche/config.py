"""Server settings and the data-directory layout (embedded mode: one process, one node)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from cloche.node.spec import Limits

PACKAGE_DIR = Path(__file__).resolve().parent
INIT_BINARY = PACKAGE_DIR / "_bin" / "cloche-init"


@dataclass
class Settings:
    data_dir: Path = Path(".cloche")
    host: str = "127.0.0.1"
    port: int = 8787
    pool_size: int = 2
    pool_template: str = "base"
    default_limits: Limits = field(default_factory=Limits)
    driver: str = "runc"
    blob_url: str = "local"  # snapshot store: local, file:///dir or s3://bucket/prefix?endpoint=URL
    # Per-tenant defaults; the admin can set others per tenant.
    max_sandboxes: int = 100
    max_cpu: float = 64.0
    max_memory_mb: int = 64 * 1024
    rate_per_s: float = 200.0
    rate_burst: int = 400
    # The embedded node as the scheduler sees it (0: detect cpus / MemTotal; disk 0: not checked).
    node_cpu: float = 0.0
    node_memory_mb: int = 0
    node_disk_mb: int = 0
    node_region: str = "local"
    # Allocation is by request, up to capacity x these ratios; live usage keeps it honest.
    # cpu is compressible (a limit caps bursts, idle agents use none), memory is not.
    cpu_overcommit: float = 32.0
    memory_overcommit: float = 1.5
    disk_overcommit: float = 1.0
    usage_high_water: float = 0.85  # of physical memory: take nothing more, hibernate idle sandboxes
    create_wait_s: float = 30.0  # how long a create may queue for room when it does not say (wait_s)
    preempt_idle_s: float = 60.0  # sandboxes idle this long may be hibernated to make room
    scheduler_weights: str = ""  # e.g. "latency=4,binpack=1" (see scheduler/policies.py)
    latency_matrix: str = ""  # e.g. "us-eu=80,us-ap=160" (ms)
    pool_autosize: int = 1  # size the warm pool from its claim rate (pool_size is the floor)
    pool_budget_mb: int = 0  # memory for warm sandboxes (0: 5% of the node's memory)
    # Request limits.
    max_json_bytes: int = 1 << 20
    max_file_bytes: int = 256 << 20
    max_archive_bytes: int = 1 << 30

    def apply_env(self, environ: Mapping[str, str]) -> Settings:
        """Override settings from CLOCHE_<FIELD> variables (e.g. CLOCHE_RATE_PER_S)."""
        for f in fields(self):
            raw = environ.get(f"CLOCHE_{f.name.upper()}")
            if raw is not None and f.type == "str":
                setattr(self, f.name, raw)
            elif raw is not None and f.type in ("int", "float"):
                try:
                    setattr(self, f.name, int(raw) if f.type == "int" else float(raw))
                except ValueError:
                    raise ValueError(f"CLOCHE_{f.name.upper()} must be a number, got {raw!r}") from None
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cloche.db"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin-key"
