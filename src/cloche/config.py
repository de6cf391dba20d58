"""Server settings and the data-directory layout (embedded mode: one process, one node)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # Per-tenant defaults; the admin can set others per tenant.
    max_sandboxes: int = 100
    max_cpu: float = 64.0
    max_memory_mb: int = 64 * 1024
    rate_per_s: float = 200.0
    rate_burst: int = 400
    # Request limits.
    max_json_bytes: int = 1 << 20
    max_file_bytes: int = 256 << 20
    max_archive_bytes: int = 1 << 30

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cloche.db"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin-key"
