"""cgroup v1 and v2 behind one interface, like runc's libcontainer cgroups.Manager.

runc creates and removes each sandbox's cgroup from the OCI spec; this module reads
live usage, adjusts limits in place (a warm-pool claim must not pay `runc update`),
and finds cgroups that a crash left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cloche.node.spec import Limits

ROOT = Path("/sys/fs/cgroup")
PARENT = "cloche"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Usage:
    """A cgroup's reading. `anon_memory_bytes` is what the kernel cannot give back
    without swap (anonymous pages); the rest of `memory_bytes` is page cache."""

    memory_bytes: int
    anon_memory_bytes: int
    cpu_usec: int
    pids: int


class CgroupManager(Protocol):
    """One sandbox's cgroup, whichever cgroup version the host runs."""

    def set_limits(self, limits: Limits) -> None: ...

    def usage(self) -> Usage: ...

    def paths(self) -> list[Path]: ...


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _stat_value(path: Path, key: str) -> int:
    """One counter of a memory.stat file (0 when it cannot be read)."""
    try:
        for line in path.read_text().splitlines():
            name, value = line.split()
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CgroupV1:
    def __init__(self, rel: str) -> None:
        self.rel = rel.strip("/")

    def _dir(self, controller: str) -> Path:
        return ROOT / controller / self.rel

    def set_limits(self, limits: Limits) -> None:
        mem = self._dir("memory")
        limit = str(limits.memory_mb * 1024 * 1024)
        memsw = mem / "memory.memsw.limit_in_bytes"
        current = _read_int(mem / "memory.limit_in_bytes")
        # memsw must stay >= the memory limit at every step.
        order = ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes")
        if int(limit) < current:
            order = order[::-1]
        for name in order:
            if name == "memory.limit_in_bytes" or memsw.exists():
                _write(mem / name, limit)
        _write(self._dir("cpu") / "cpu.cfs_quota_us", str(int(limits.cpu * CPU_PERIOD_US)))
        _write(self._dir("pids") / "pids.max", str(limits.pids))

    def usage(self) -> Usage:
        return Usage(
            memory_bytes=_read_int(self._dir("memory") / "memory.usage_in_bytes"),
            anon_memory_bytes=_stat_value(self._dir("memory") / "memory.stat", "total_rss"),
            cpu_usec=_read_int(self._dir("cpuacct") / "cpuacct.usage") // 1000,
            pids=_read_int(self._dir("pids") / "pids.current"),
        )

    def paths(self) -> list[Path]:
        return [root / self.rel for root in hierarchies()]


class CgroupV2:
    def __init__(self, rel: str) -> None:
        self.dir = ROOT / rel.strip("/")

    def set_limits(self, limits: Limits) -> None:
        _write(self.dir / "memory.max", str(limits.memory_mb * 1024 * 1024))
        if (self.dir / "memory.swap.max").exists():
            _write(self.dir / "memory.swap.max", "0")
        _write(self.dir / "cpu.max", f"{int(limits.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        _write(self.dir / "pids.max", str(limits.pids))

    def usage(self) -> Usage:
        cpu = 0
        try:
            for line in (self.dir / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    cpu = int(line.split()[1])
        except OSError:
            pass
        return Usage(
            memory_bytes=_read_int(self.dir / "memory.current"),
            anon_memory_bytes=_stat_value(self.dir / "memory.stat", "anon"),
            cpu_usec=cpu,
            pids=_read_int(self.dir / "pids.current"),
        )

    def paths(self) -> list[Path]:
        return [self.dir]


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def swap_control() -> bool:
    """Whether the host can cap memory+swap (v1 needs swap accounting compiled in)."""
    if is_v2():
        return True
    return (ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()


def manager(rel: str) -> CgroupManager:
    return CgroupV2(rel) if is_v2() else CgroupV1(rel)


def node_parent(node_key: str) -> str:
    return f"/{PARENT}/{node_key}"


def hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy: the unified root on v2; on v1 each controller's,
    the named ones (runc also makes its cgroup in name=systemd) and the hybrid v2 mount."""
    if is_v2():
        return [ROOT]
    return sorted(p for p in ROOT.iterdir() if p.is_dir() and not p.is_symlink() and os.path.ismount(p))


def leftovers(parent: str = f"/{PARENT}") -> list[Path]:
    """Every cgroup directory at or below `parent`, in any hierarchy (deepest first)."""
    found = []
    for root in hierarchies():
        base = root / parent.strip("/")
        if base.is_dir():
            found += sorted((Path(d) for d, _, _ in os.walk(base)), key=lambda p: -len(str(p)))
    return found


def remove_tree(parent: str) -> None:
    """rmdir every empty cgroup at or below `parent` (deepest first); busy ones stay."""
    for path in leftovers(parent):
        try:
            os.rmdir(path)
        except OSError:
            pass


def remove_node_tree(node_key: str) -> None:
    """A node's own cgroups, then the shared parent if no other node has any left. Never
    the other nodes' empty ones: a sandbox's cgroup is empty for a moment while its runtime
    makes it in one hierarchy after another, and removing it then fails that create."""
    remove_tree(node_parent(node_key))
    for root in hierarchies():
        try:
            os.rmdir(root / PARENT)
        except OSError:  # another node's cgroups are still there (or it is gone already)
            pass
