"""The vocabulary of orphan collection: what an orphan is, the kinds in removal order,
and how a node key is judged (live, orphaned, unknown owner, dir-less) from its
runtime directory's `owner` file.

Why it exists: scanning (scan.py) and removing (removal.py) both speak it, and the
removal re-judges each key just before it acts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RUN_ROOT = Path("/run/cloche")
OWNER_FILE = "owner"
CLAIM_DIRS = ("uids", "net")
ALIAS_PREFIX = "cloche:"
TABLE_PREFIX = "cloche_"
KEY_RE = re.compile(r"[0-9a-f]{10}")
SETTLE_S = 1.0  # how long dir-less objects must stay before they count (a closing node removes its table last)
KILL_WAIT_S = 5.0

SHARED_DIRS = ("uids", "net")  # host-wide claim files, shared by every node
Kind = Literal["container", "process", "mount", "cgroup", "link", "nft table", "claim", "run dir"]
ORDER: tuple[Kind, ...] = ("container", "process", "mount", "cgroup", "link", "nft table", "claim", "run dir")
Status = Literal["live", "orphaned", "unknown", "dirless"]


@dataclass(frozen=True)
class Orphan:
    """One object a vanished node left. `name` is what is removed: a container id, a pid,
    a mount point, a cgroup path (in every hierarchy), a link, a table, a claim file or
    the runtime directory; `extra` is context (runc root, command, sandbox id, ...)."""

    kind: Kind
    name: str
    key: str
    reason: str
    unknown_owner: bool = False
    extra: str = ""

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "key": self.key, "reason": self.reason,
                "unknown_owner": self.unknown_owner, "extra": self.extra}  # fmt: skip


@dataclass(frozen=True)
class Failure:
    orphan: Orphan
    error: str


@dataclass(frozen=True)
class KeyState:
    key: str
    status: Status
    owner: str | None = None

    @property
    def reason(self) -> str:
        if self.status == "orphaned":
            return f"data dir {self.owner} is gone"
        if self.status == "unknown":
            return "no owner file (unknown owner)"
        if self.status == "dirless":
            return "no runtime dir"
        return f"data dir {self.owner} exists"


def key_state(run_root: Path, key: str) -> KeyState:
    """Whether the node with this key is live, orphaned, of unknown owner or dir-less."""
    rdir = run_root / key
    if not rdir.is_dir():
        return KeyState(key, "dirless")
    try:
        owner = (rdir / OWNER_FILE).read_text().rstrip("\n")
    except OSError:
        return KeyState(key, "unknown")
    if not owner:
        return KeyState(key, "unknown")  # being written
    return KeyState(key, "live" if os.path.exists(owner) else "orphaned", owner)


def run_dir_keys(run_root: Path) -> list[str]:
    try:
        return sorted(p.name for p in run_root.iterdir() if KEY_RE.fullmatch(p.name) and p.is_dir())
    except FileNotFoundError:
        return []
