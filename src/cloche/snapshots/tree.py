"""Capture a sandbox's writable layer (the overlay upper directory) into a manifest,
and restore a manifest into an empty directory.

Kept: regular files (content-defined chunks), directories, symlinks, hard links,
fifos, overlay whiteouts (char 0:0: deleted template files stay deleted), the opaque
directory marker, user.* xattrs, modes, ownership inside the sandbox (host uid minus the
sandbox's base) and mtimes. Sparse files come back sparse: all-zero chunks are holes.
"""

from __future__ import annotations

import base64
import ctypes
import os
import stat
from pathlib import Path
from typing import Any

from pyfastcdc.cy import FastCDC

from cloche.snapshots.store import ChunkWriter, SnapshotStore, WriteStats

CDC = dict(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
KEEP_XATTRS = ("user.", "trusted.overlay.opaque")
UID_SPAN = 65536
MANIFEST_VERSION = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _inner(host_id: int, base: int) -> int:
    inner = host_id - base
    return inner if 0 <= inner < UID_SPAN else 65534


def _xattrs(path: str) -> dict[str, str]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith(KEEP_XATTRS):
            value = os.getxattr(path, name, follow_symlinks=False)
            out[name] = base64.b64encode(value).decode()
    return out


def capture(root: Path, uid_base: int, store: SnapshotStore, parent: dict[str, Any] | None,
            stats: WriteStats) -> dict[str, Any]:  # fmt: skip
    """Walk `root` (never following links) and return its manifest; chunks go to `store`.

    Files whose size and mtime match the parent manifest reuse its chunk list unread.
    """
    previous = {e["p"]: e for e in parent["entries"]} if parent else {}
    entries: list[dict[str, Any]] = []
    cdc = FastCDC(**CDC)
    with store.writer(stats) as chunks:
        total = _walk(root, uid_base, previous, entries, cdc, chunks)
    return {"version": MANIFEST_VERSION, "entries": entries, "bytes": total}


def _walk(root: Path, uid_base: int, previous: dict[str, Any], entries: list[dict[str, Any]], cdc: FastCDC,
          chunks: ChunkWriter) -> int:  # fmt: skip
    """Append an entry per file under `root` to `entries`; returns the bytes of regular files."""
    seen_inodes: dict[tuple[int, int], str] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            e: dict[str, Any] = {"p": rel, "m": stat.S_IMODE(st.st_mode), "u": _inner(st.st_uid, uid_base),
                                 "g": _inner(st.st_gid, uid_base), "mt": st.st_mtime_ns}  # fmt: skip
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                e["t"] = "d"
            elif stat.S_ISLNK(mode):
                e["t"], e["l"] = "l", os.readlink(full)
            elif stat.S_ISCHR(mode) and st.st_rdev == 0:
                e["t"] = "w"
            elif stat.S_ISFIFO(mode):
                e["t"] = "p"
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    e["t"], e["l"] = "h", seen_inodes[key]
                else:
                    seen_inodes[key] = rel
                    e["t"], e["s"] = "f", st.st_size
                    old = previous.get(rel)
                    if old and old.get("t") == "f" and old["s"] == st.st_size and old["mt"] == st.st_mtime_ns:
                        e["c"] = old["c"]
                        chunks.reused(len(old["c"]))
                    else:
                        e["c"] = _chunk_file(full, st.st_size, cdc, chunks)
                    total += st.st_size
            else:
                continue  # device nodes other than whiteouts and sockets are not kept
            xattrs = _xattrs(full)
            if xattrs:
                e["x"] = xattrs
            entries.append(e)
    return total


def _chunk_file(path: str, size: int, cdc: FastCDC, chunks: ChunkWriter) -> list[list[Any]]:
    if size == 0:
        return []
    out = []
    for chunk in cdc.cut_file(path):
        data = bytes(chunk.data)
        if data.strip(b"\0"):
            out.append([chunks.put(data), len(data)])
        else:
            out.append([None, len(data)])  # a hole: nothing stored
    return out


def chunk_digests(manifest: dict[str, Any]) -> set[str]:
    return {c[0] for e in manifest["entries"] if e.get("t") == "f" for c in e["c"] if c[0]}


def restore(manifest: dict[str, Any], root: Path, uid_base: int, store: SnapshotStore) -> None:
    """Recreate the captured tree under the empty directory `root`, then sync it."""
    dirs: list[tuple[str, dict[str, Any]]] = []
    data = store.get_chunks(c[0] for e in manifest["entries"] if e["t"] == "f" for c in e["c"] if c[0])
    for e in manifest["entries"]:
        path = os.path.join(root, e["p"])
        kind = e["t"]
        uid, gid = uid_base + e["u"], uid_base + e["g"]
        if kind == "d":
            os.mkdir(path, 0o700)
            dirs.append((path, e))
            continue
        if kind == "f":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                for digest, length in e["c"]:
                    if digest is None:
                        os.lseek(fd, length, os.SEEK_CUR)
                    else:
                        os.write(fd, next(data))
                os.ftruncate(fd, e["s"])
            finally:
                os.close(fd)
        elif kind == "l":
            os.symlink(e["l"], path)
        elif kind == "h":
            os.link(os.path.join(root, e["l"]), path, follow_symlinks=False)
            continue
        elif kind == "w":
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        elif kind == "p":
            os.mkfifo(path, 0o600)
        _apply(path, e, uid, gid)
    for path, e in reversed(dirs):
        _apply(path, e, uid_base + e["u"], uid_base + e["g"])
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _libc.syncfs(fd)
    finally:
        os.close(fd)


def _apply(path: str, e: dict[str, Any], uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    if e["t"] != "l":
        os.chmod(path, e["m"])
    for name, value in e.get("x", {}).items():
        os.setxattr(path, name, base64.b64decode(value), follow_symlinks=False)
    os.utime(path, ns=(e["mt"], e["mt"]), follow_symlinks=False)
