"""Tar upload into and download out of a sandbox, through the path-safe file layer.

Upload neutralises what could hurt: absolute names and names with `..` are skipped
(a member may still reach elsewhere in the sandbox through a link the archive made, but
never out of the sandbox, because every path is resolved inside its root), device
nodes and fifos are skipped, setuid/setgid/sticky bits are dropped,
and byte and entry-count limits stop archive bombs. Links are created as links: every
later access resolves them inside the sandbox root, so they cannot point out of it.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import IO

from cloche.node.errors import FileError
from cloche.node.files import SandboxFS, normalize

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_ENTRIES = 100_000


@dataclass
class UploadReport:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)


def _member_path(dest: str, name: str) -> str | None:
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        return None
    return f"{dest.rstrip('/')}/{'/'.join(parts)}"


def upload(
    fs: SandboxFS,
    dest: str,
    fileobj: IO[bytes],
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> UploadReport:
    dest = normalize(dest)
    fs.mkdir(dest)
    report = UploadReport()
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|*")
    except tarfile.TarError as exc:
        raise FileError(f"not a valid tar archive: {exc}", "invalid_archive") from exc
    with tar:
        try:
            for count, member in enumerate(tar, start=1):
                if count > max_entries:
                    raise FileError(f"archive has more than {max_entries} entries", "too_large")
                _extract(fs, tar, member, dest, report, max_bytes)
        except tarfile.TarError as exc:
            raise FileError(f"corrupt tar archive: {exc}", "invalid_archive") from exc
    return report


def _extract(
    fs: SandboxFS,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: str,
    report: UploadReport,
    max_bytes: int,
) -> None:
    target = _member_path(dest, member.name)
    if target is None:
        report.skipped.append({"name": member.name, "reason": "absolute name or '..'"})
        return
    mode = member.mode & 0o777
    if member.isdir():
        fs.mkdir(target, mode)
        report.dirs += 1
    elif member.isreg():
        if report.bytes + member.size > max_bytes:
            raise FileError(f"archive expands past {max_bytes} bytes", "too_large")
        src = tar.extractfile(member)
        assert src is not None
        fs.mkdir(target.rpartition("/")[0] or "/")
        fs.write_chunks(target, iter(lambda: src.read(1 << 20), b""), mode)  # type: ignore[arg-type]
        report.bytes += member.size
        report.files += 1
    elif member.issym():
        fs.mkdir(target.rpartition("/")[0] or "/")
        fs.symlink(target, member.linkname)
        report.links += 1
    elif member.islnk():
        existing = _member_path(dest, member.linkname)
        if existing is None:
            report.skipped.append({"name": member.name, "reason": "hard link leaves the archive"})
            return
        try:
            fs.hardlink(target, existing)
        except FileError as exc:
            report.skipped.append({"name": member.name, "reason": f"hard link target: {exc}"})
            return
        report.links += 1
    else:
        report.skipped.append({"name": member.name, "reason": "device nodes and fifos are not allowed"})


def download(fs: SandboxFS, path: str) -> IO[bytes]:
    """Write `path` (a directory or file) as a tar into a temporary file and return it,
    rewound; the caller streams and closes it. Memory stays bounded for any size."""
    path = normalize(path)
    out = tempfile.TemporaryFile()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        if fs.is_dir(path):
            _add_tree(fs, tar, path, "")
        else:
            _add_file(fs, tar, path, path.rpartition("/")[2])
    out.seek(0)
    return out


def _add_file(fs: SandboxFS, tar: tarfile.TarFile, path: str, arcname: str) -> None:
    fd = fs.open_read(path)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        info = tarfile.TarInfo(arcname)
        info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime)
        tar.addfile(info, f)


def _add_tree(fs: SandboxFS, tar: tarfile.TarFile, path: str, prefix: str) -> None:
    for entry in fs.list(path):
        arc = f"{prefix}{entry.name}"
        if entry.type == "dir":
            info = tarfile.TarInfo(arc)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, entry.mode, int(entry.mtime)
            tar.addfile(info)
            _add_tree(fs, tar, entry.path, arc + "/")
        elif entry.type == "symlink":
            info = tarfile.TarInfo(arc)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, entry.target or "", int(entry.mtime)
            tar.addfile(info)
        elif entry.type == "file":
            _add_file(fs, tar, entry.path, arc)
