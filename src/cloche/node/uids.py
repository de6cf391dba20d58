"""Host-wide allocation of per-sandbox uid ranges.

Each sandbox gets its own 65536-uid range, so a process that escaped one sandbox owns
nothing of another. Ranges are claimed with O_EXCL marker files under /run/cloche/uids,
which every cloche node on the host shares, so two nodes never hand out the same range.
"""

from __future__ import annotations

import os
from pathlib import Path

FIRST_UID = 1 << 24
RANGE = 65536
MAX_INDEX = (2**32 - FIRST_UID) // RANGE - 1


class UidAllocator:
    def __init__(self, root: Path = Path("/run/cloche/uids")) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._next = 0  # where the next search starts: allocation stays O(1) as ranges fill

    @staticmethod
    def base(index: int) -> int:
        return FIRST_UID + index * RANGE

    def allocate(self, owner: str) -> int:
        for step in range(MAX_INDEX):
            index = (self._next + step) % MAX_INDEX
            try:
                fd = os.open(self.root / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.write(fd, owner.encode())
            os.close(fd)
            self._next = index + 1
            return index
        raise OSError("no free uid range on this host")

    def claim(self, index: int, owner: str) -> None:
        """Re-take a range recorded by a sandbox that survived a restart."""
        (self.root / str(index)).write_text(owner)

    def release(self, index: int) -> None:
        try:
            os.unlink(self.root / str(index))
        except FileNotFoundError:
            pass
