"""Templates: the read-only lower layer a sandbox's root is built on.

`base` is the zero-build default: its own minimal /etc, /tmp, /root and /workspace, with
the host's /usr bound read-only (so Python and coreutils are there with nothing to
build). Other templates come from a rootfs directory or a tarball and assume nothing
about their contents: cloche-init is bound in, so even a busybox-only image works.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cloche.node.bundle import HostBind
from cloche.node.errors import InvalidSpec, TemplateNotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "workspace", "root", ".cloche")
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_ETC = ("alternatives", "ssl", "ca-certificates", "ld.so.cache", "ld.so.conf",
            "ld.so.conf.d", "nsswitch.conf", "protocols", "services", "mime.types",
            "localtime", "python3", "python3.11", "bash.bashrc", "profile")  # fmt: skip
PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/workspace:/bin/sh\n"
PASSWD += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class Template:
    name: str
    rootfs: str
    binds: tuple[HostBind, ...]


def _prepare(rootfs: Path) -> None:
    """Ensure the mount points and files every sandbox needs exist in the template."""
    for d in MOUNT_POINTS:
        (rootfs / d).mkdir(exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "root", 0o700)
    (rootfs / ".cloche" / "bin").mkdir(exist_ok=True)
    (rootfs / ".cloche" / "host").mkdir(exist_ok=True)
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    for name, text in (("hosts", "127.0.0.1 localhost\n::1 localhost\n"), ("hostname", "sandbox\n")):
        if not (etc / name).exists():
            (etc / name).write_text(text)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        if not (etc / name).exists():
            (etc / name).write_text(text)


class TemplateStore:
    """Templates kept under DATA/templates/<name>/ (rootfs/ plus meta.json)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._build_lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise InvalidSpec(f"invalid template name {name!r}")
        return self.root / name

    def get(self, name: str) -> Template:
        d = self._dir(name)
        if name == "base" and not (d / "meta.json").exists():
            with self._build_lock:
                if not (d / "meta.json").exists():
                    self._build_base()
        try:
            meta = json.loads((d / "meta.json").read_text())
        except FileNotFoundError:
            raise TemplateNotFound(f"template {name!r} does not exist") from None
        binds = tuple(HostBind(b["source"], b["destination"]) for b in meta.get("binds", []))
        return Template(name=name, rootfs=str(d / "rootfs"), binds=binds)

    def names(self) -> list[str]:
        found = {p.parent.name for p in self.root.glob("*/meta.json")}
        return sorted(found | {"base"})

    def _commit(self, name: str, staging: Path, binds: list[HostBind]) -> Template:
        _prepare(staging / "rootfs")
        meta = {"binds": [{"source": b.source, "destination": b.destination} for b in binds]}
        (staging / "meta.json").write_text(json.dumps(meta))
        final = self._dir(name)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        return self.get(name)

    def _staging(self, name: str) -> Path:
        staging = self.root / f".staging-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "rootfs").mkdir(parents=True)
        return staging

    def _build_base(self) -> None:
        staging = self._staging("base")
        rootfs = staging / "rootfs"
        (rootfs / "usr").mkdir()
        binds = [HostBind("/usr", "/usr")]
        for name in USR_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                os.symlink(os.readlink(host).lstrip("/"), rootfs / name)
            elif host.is_dir():
                (rootfs / name).mkdir()
                binds.append(HostBind(str(host), f"/{name}"))
        etc = rootfs / "etc"
        etc.mkdir()
        for name in HOST_ETC:
            src = Path("/etc") / name
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, etc / name, symlinks=True)
            elif src.exists() or src.is_symlink():
                shutil.copy2(src, etc / name, follow_symlinks=False)
        (etc / "resolv.conf").write_text("")
        (rootfs / "var" / "tmp").mkdir(parents=True)
        os.chmod(rootfs / "var" / "tmp", 0o1777)
        self._commit("base", staging, binds)

    def import_dir(self, name: str, source: str) -> Template:
        staging = self._staging(name)
        shutil.rmtree(staging / "rootfs")
        shutil.copytree(source, staging / "rootfs", symlinks=True)
        return self._commit(name, staging, [])

    def import_tar(self, name: str, tarball: str | IO[bytes], on_base: bool = False) -> Template:
        """Import a rootfs tarball (trusted operator input, extracted with tarfile's `tar`
        filter: no absolute names, no escapes, no device nodes). With `on_base` the files
        are laid over the `base` template (the host's /usr, read-only, and its /etc), so a
        template can be "base plus my agent's code"."""
        if name == "base":
            raise InvalidSpec("the name 'base' is reserved for the built-in template")
        self._dir(name)
        staging = self._staging(name)
        binds: list[HostBind] = []
        if on_base:
            base = self.get("base")
            shutil.rmtree(staging / "rootfs")
            shutil.copytree(base.rootfs, staging / "rootfs", symlinks=True)
            binds = list(base.binds)
        try:
            with tarfile.open(tarball) if isinstance(tarball, str) else tarfile.open(fileobj=tarball) as tar:
                tar.extractall(staging / "rootfs", filter="tar")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise InvalidSpec(f"template archive could not be imported: {exc}") from exc
        return self._commit(name, staging, binds)

    def delete(self, name: str) -> None:
        d = self._dir(name)
        if not (d / "meta.json").exists():
            raise TemplateNotFound(f"template {name!r} does not exist")
        shutil.rmtree(d)
