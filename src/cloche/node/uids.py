"""Host-wide allocation of per-sandbox indices: uid ranges, and network addresses.

Each sandbox gets its own 65536-uid range, so a process that escaped one sandbox owns
nothing of another, and its own /31 of the node's address pool. Indices are claimed
with O_EXCL marker files under /run/cloche (holding the owning node's key), which every
cloche node on the host shares, so two nodes never hand out the same one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FIRST_UID = 1 << 24
RANGE = 65536
MAX_INDEX = (2**32 - FIRST_UID) // RANGE - 1


class HostClaims:
    """Indices 0..size-1 claimed host-wide, one marker file each."""

    def __init__(self, root: Path, size: int, what: str) -> None:
        self.root = root
        self.size = size
        self.what = what
        root.mkdir(parents=True, exist_ok=True)
        self._next = 0  # where the next search starts: allocation stays O(1) as indices fill

    def allocate(self, owner: str) -> int:
        for step in range(self.size):
            index = (self._next + step) % self.size
            try:
                fd = os.open(self.root / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.write(fd, owner.encode())
            os.close(fd)
            self._next = index + 1
            return index
        raise OSError(f"no free {self.what} on this host")

    def claim(self, index: int, owner: str) -> None:
        """Re-take an index recorded by a sandbox that survived a restart."""
        (self.root / str(index)).write_text(owner)

    def release(self, index: int) -> None:
        try:
            os.unlink(self.root / str(index))
        except FileNotFoundError:
            pass

    @staticmethod
    def drop_ownerless(root: Path, settle_s: float) -> int:
        """Remove markers that name no owner and are older than `settle_s`: a node killed
        between creating a marker and writing its key into it (`allocate`, microseconds
        apart) left it, and no node can ever reclaim it as its own."""
        dropped = 0
        for path in root.iterdir() if root.is_dir() else ():
            try:
                info = path.stat()
                if info.st_size == 0 and time.time() - info.st_mtime > settle_s:
                    path.unlink()
                    dropped += 1
            except OSError:
                continue
        return dropped

    def owned_by(self, owner: str) -> list[int]:
        """Indices whose marker names `owner` (what a crashed node left claimed)."""
        found = []
        for path in self.root.iterdir():
            try:
                if path.read_text() == owner:
                    found.append(int(path.name))
            except (OSError, ValueError):
                continue
        return found


class UidAllocator(HostClaims):
    def __init__(self, root: Path = Path("/run/cloche/uids")) -> None:
        super().__init__(root, MAX_INDEX, "uid range")

    @staticmethod
    def base(index: int) -> int:
        return FIRST_UID + index * RANGE
