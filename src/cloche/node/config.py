"""A node's configuration and its identity, apart from the runtime that uses them.

Why it exists: the server turns its settings into a `NodeConfig` (server/node_settings.py)
without importing the runtime itself, which only control's wiring (server/app.py) does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cloche.node.net.node import NetConfig
from cloche.node.spec import Limits


@dataclass
class NodeConfig:
    data_dir: Path
    init_binary: Path
    isolation: str = "runc"  # the warm pool's tier (sandboxes choose theirs in their spec)
    pool_size: int = 0
    pool_template: str = "base"
    pool_limits: Limits = Limits()
    run_root: Path = Path("/run/cloche")
    blob_url: str = "local"  # local (DATA/blobs), file:///dir or s3://bucket/prefix?endpoint=...
    network: NetConfig | None = field(default_factory=NetConfig)  # None: loopback-only sandboxes, no veth


def node_key(data_dir: Path) -> str:
    """The node's id: stable for a data directory, short enough for cgroup and link names."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
