"""Per-sandbox disk: a sparse ext4 image, loop-mounted, that holds the overlay's upper
layer. The image size is the byte quota and its inode table the inode cap, both
enforced by the kernel (ENOSPC inside, host unaffected). Chosen because this kernel has
no quota support (CONFIG_QUOTA is off), so xfs/ext4 project quotas are not available.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import struct
import subprocess
import threading
from pathlib import Path

from cloche.node import linux

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOATIME = 0x400


def create_image(path: str, size_mb: int, inodes: int) -> None:
    """Make a fresh sparse ext4 image of `size_mb` with exactly `inodes` inodes."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    subprocess.run(
        [
            "mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inodes), "-O", "^resize_inode",
            "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", path,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def mount_image(image: str, target: str) -> None:
    """Attach `image` to a free loop device and mount it on `target`.

    The device is configured with AUTOCLEAR, so it detaches itself when the filesystem
    is unmounted: nothing is left to clean up by hand, even after a crash.
    """
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(64):
            num = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            dev = f"/dev/loop{num}"
            if not os.path.exists(dev):
                os.mknod(dev, 0o660 | stat.S_IFBLK, os.makedev(7, num))
            loop = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            try:
                info = struct.pack("QQQQQIIII64s64s32sQQ", 0, 0, 0, 0, 0, 0, 0, 0,
                                   LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0)  # fmt: skip
                try:
                    fcntl.ioctl(loop, LOOP_CONFIGURE, struct.pack("II", backing, 0) + info + bytes(64))
                except OSError as exc:
                    if exc.errno == errno.EBUSY:  # another thread took it first
                        continue
                    raise
                linux.mount(dev, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME)
                return
            finally:
                os.close(loop)
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(ctl)
        os.close(backing)


def unmount(target: str) -> None:
    try:
        linux.umount(target, detach=False)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # not mounted, or no mount point
            return
        linux.umount(target, detach=True)


class DiskStock:
    """A few blank, already-formatted images of the default size, so a cold create does
    not wait for mkfs. Images are claimed by rename (atomic) and refilled in the
    background; a create with another size or inode count formats its own."""

    def __init__(self, root: Path, size_mb: int, inodes: int, count: int = 4) -> None:
        self.root = root
        self.size_mb = size_mb
        self.inodes = inodes
        self.count = count
        self._lock = threading.Lock()
        self._filling = False
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob("*.tmp"):
            leftover.unlink()

    def take(self, size_mb: int, inodes: int, dest: Path) -> bool:
        if (size_mb, inodes) != (self.size_mb, self.inodes):
            return False
        with self._lock:
            for image in sorted(self.root.glob("*.img")):
                os.rename(image, dest)
                break
            else:
                return False
        self.refill_soon()
        return True

    def refill_soon(self) -> None:
        with self._lock:
            if self._filling:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="disk-stock", daemon=True).start()

    def _fill(self) -> None:
        try:
            while len(list(self.root.glob("*.img"))) < self.count:
                name = secrets.token_hex(6)
                tmp = self.root / f"{name}.tmp"
                create_image(str(tmp), self.size_mb, self.inodes)
                os.rename(tmp, self.root / f"{name}.img")
        finally:
            with self._lock:
                self._filling = False
