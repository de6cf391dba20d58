"""The node's durable record of each sandbox: one JSON file per sandbox, replaced
atomically (write, fsync, rename, fsync the directory), so a crash at any point leaves
either the old record or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cloche.node.spec import SandboxSpec


@dataclass
class SandboxRecord:
    id: str
    state: str
    spec: SandboxSpec
    uid_index: int
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    pooled: bool = False
    snapshot: str | None = None  # manifest of the last hibernate (or the one it was made from)
    last_hibernate: dict[str, int] | None = None  # write statistics of the last hibernate
    net: dict[str, Any] | None = None  # index, address and gateway while its network is attached

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxRecord:
        data = dict(data)
        data["spec"] = SandboxSpec.from_dict(data["spec"])
        return cls(**data)


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def dir(self, sandbox_id: str) -> Path:
        return self.root / sandbox_id

    def save(self, record: SandboxRecord) -> None:
        record.updated_at = time.time()
        d = self.dir(record.id)
        d.mkdir(exist_ok=True)
        tmp = d / "record.json.tmp"
        with open(tmp, "w") as f:
            json.dump(record.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, d / "record.json")
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_all(self) -> list[SandboxRecord]:
        records = []
        for path in sorted(self.root.glob("*/record.json")):
            try:
                records.append(SandboxRecord.from_json(json.loads(path.read_text())))
            except (ValueError, TypeError, KeyError):
                continue
        return records

    def orphan_dirs(self) -> list[Path]:
        """Sandbox directories whose record was never written (a crash mid-create)."""
        return [d for d in self.root.iterdir() if d.is_dir() and not (d / "record.json").exists()]
