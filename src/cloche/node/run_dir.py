"""The node's runtime directory, /run/cloche/<node key>: made at start, gone when idle.

Why it exists: runc must traverse to a sandbox's rootfs as the sandbox's unprivileged
root, so bundles, mounts and sockets live under a world-traversable tmpfs directory
apart from DATA. Setting it up (the owner file `cloche node gc` reads, the in-sandbox
binaries, the trust store) and removing it are host chores, not sandbox lifecycle.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloche.node import cgroups
from cloche.node.paths import BIN_DIR_PATH
from cloche.node.runc import OciDriver

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm"}  # fmt: skip
# The trust store every sandbox gets when the node has networking: the host's bundle
# plus the node's egress-proxy CA (see `install_trust`), at a path that always exists
# in the sandbox, and named by the variables that Python, requests, Node, curl and git read.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUNDLE_NAME, CA_NAME = "ca-certificates.crt", "cloche-ca.crt"
TRUST_ENV = {"SSL_CERT_FILE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}", "REQUESTS_CA_BUNDLE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}",
             "CURL_CA_BUNDLE": f"{BIN_DIR_PATH}/{BUNDLE_NAME}", "GIT_SSL_CAINFO": f"{BIN_DIR_PATH}/{BUNDLE_NAME}",
             "NODE_EXTRA_CA_CERTS": f"{BIN_DIR_PATH}/{CA_NAME}"}  # fmt: skip


def make(run_root: Path, key: str, data_dir: Path) -> Path:
    """The node's runtime directory, traversable by sandbox roots and naming its owner."""
    run = run_root / key
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run_root, 0o711)
    os.chmod(run, 0o711)
    _write_owner(run / "owner", data_dir)
    return run


def stage_binaries(source_dir: Path, bin_dir: Path) -> None:
    """Copy the package's _bin/ (cloche-init and in-sandbox tools) to `bin_dir`, bound
    read-only at /.cloche/bin in every sandbox, from a path the sandbox's root can
    traverse. Files are replaced by rename: running sandboxes may be executing them."""
    bin_dir.mkdir(exist_ok=True)
    os.chmod(bin_dir, 0o755)
    for src in source_dir.iterdir():
        if not src.is_file():  # a __pycache__ a byte-compiler left beside cloche_state.py
            continue
        staging = bin_dir / f".{src.name}.{os.getpid()}"
        shutil.copy2(src, staging)
        os.chmod(staging, 0o755)
        os.rename(staging, bin_dir / src.name)


def install_trust(bin_dir: Path, ca_pem: bytes) -> None:
    """Write the sandboxes' trust store into the bound bin directory: the host's CA
    bundle with the node's egress-proxy CA appended (the proxy presents certificates
    from it for hosts with request rules), and that CA alone for NODE_EXTRA_CA_CERTS."""
    system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.exists() else b""
    for name, data in ((BUNDLE_NAME, system.rstrip(b"\n") + b"\n" + ca_pem), (CA_NAME, ca_pem)):
        staging = bin_dir / f".{name}.{os.getpid()}"
        staging.write_bytes(data)
        os.chmod(staging, 0o644)
        os.rename(staging, bin_dir / name)


def remove(run: Path, drivers: dict[str, OciDriver]) -> None:
    """With no live sandbox left, the node's runtime directory goes too (`run` is
    /run/cloche/<node key>), and its cgroups."""
    for driver in drivers.values():
        driver.delete_all()
    shutil.rmtree(run, ignore_errors=True)
    cgroups.remove_node_tree(run.name)  # ours, and the shared parent once empty


def _write_owner(path: Path, data_dir: Path) -> None:
    """Name the data directory that owns this runtime directory (atomically): `cloche
    node gc` removes what a node left once that directory is gone."""
    owner = str(data_dir.resolve())
    if path.exists() and path.read_text() == owner:
        return
    tmp = path.with_name(f".owner.{os.getpid()}")
    tmp.write_text(owner)
    os.rename(tmp, path)
