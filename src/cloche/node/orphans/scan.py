"""Finding what vanished nodes left: a read-only inventory of the host by node key.

Why it exists: a node's leftovers are spread over runc state roots, mountinfo,
/sys/fs/cgroup/*/cloche, netlink (veth aliases), nftables and the host-wide claim
files; this gathers them, per orphaned key and in removal order, and never changes
anything. A key with objects but no runtime directory counts only after a settle.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.node import cgroups, linux
from cloche.node.orphans.model import (
    ALIAS_PREFIX,
    CLAIM_DIRS,
    KEY_RE,
    RUN_ROOT,
    SETTLE_S,
    SHARED_DIRS,
    TABLE_PREFIX,
    KeyState,
    Kind,
    Orphan,
    key_state,
    run_dir_keys,
)

if TYPE_CHECKING:
    from cloche.node.net.nft import Nft


@dataclass
class _Tagged:
    """Key-tagged objects outside the runtime directories, by key."""

    links: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> (ifname, sandbox id)
    tables: set[str] = field(default_factory=set)  # keys with an inet cloche_<key> table
    cgroup_keys: set[str] = field(default_factory=set)
    claims: dict[str, list[Path]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        return set(self.links) | self.tables | self.cgroup_keys | set(self.claims)


def _scan_links() -> dict[str, list[tuple[str, str]]]:
    from cloche.node.net import links

    found: dict[str, list[tuple[str, str]]] = {}
    for ifname, alias in links.ours(ALIAS_PREFIX):
        key, _, sandbox_id = alias[len(ALIAS_PREFIX) :].partition(":")
        if KEY_RE.fullmatch(key):
            found.setdefault(key, []).append((ifname, sandbox_id))
    return found


@functools.cache
def nft() -> Nft:
    from cloche.node.net.nft import Nft

    return Nft()  # one libnftables context for the process (a context is never freed)


def _nft_tables() -> list[tuple[str, str]]:
    from cloche.node.errors import RuntimeFailure

    try:
        return nft().tables()
    except RuntimeFailure:
        return []  # no libnftables: there are no tables of ours either


def _scan_tables() -> set[str]:
    keys = set()
    for family, name in _nft_tables():
        key = name[len(TABLE_PREFIX) :]
        if family == "inet" and name.startswith(TABLE_PREFIX) and KEY_RE.fullmatch(key):
            keys.add(key)
    return keys


def _scan_cgroup_keys() -> set[str]:
    keys = set()
    for root in cgroups.hierarchies():
        parent = root / cgroups.PARENT
        if parent.is_dir():
            keys |= {p.name for p in parent.iterdir() if p.is_dir() and KEY_RE.fullmatch(p.name)}
    return keys


def _scan_claims(run_root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in CLAIM_DIRS:
        try:
            entries = sorted((run_root / sub).iterdir(), key=lambda p: (len(p.name), p.name))
        except FileNotFoundError:
            continue
        for path in entries:
            try:
                owner = path.read_text()
            except OSError:
                continue
            if KEY_RE.fullmatch(owner):
                found.setdefault(owner, []).append(path)
    return found


def _scan_tagged(run_root: Path) -> _Tagged:
    return _Tagged(_scan_links(), _scan_tables(), _scan_cgroup_keys(), _scan_claims(run_root))


def runc() -> str | None:
    return shutil.which("runc")


def containers(run_root: Path, key: str) -> list[str]:
    """Ids of the runc containers in the key's state root (without creating it)."""
    state_root = run_root / key / "runc"
    binary = runc()
    if binary is None or not state_root.is_dir():
        return []
    proc = subprocess.run([binary, "--root", str(state_root), "list", "--format", "json"],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return sorted(c["id"] for c in json.loads(proc.stdout) or [])


def mounts_under(directory: Path) -> list[str]:
    """Mount points below `directory`, in the order to unmount them: deepest first, and
    of equal depth the most recent first (an overlay before the layers it was made of)."""
    prefix = str(directory).rstrip("/") + "/"
    points = [(i, p) for i, p in enumerate(linux.mountpoints()) if p.startswith(prefix)]
    points.sort(key=lambda ip: (-ip[1].count("/"), -ip[0]))
    return [p for _, p in points]


def cgroup_paths(key: str) -> dict[str, int]:
    """`/cloche/<key>` and every cgroup below it (deepest first), with the number of
    hierarchies each one exists in."""
    found: dict[str, int] = {}
    for root in cgroups.hierarchies():
        base = root / cgroups.PARENT / key
        if not base.is_dir():
            continue
        for d, _, _ in os.walk(base):
            rel = "/" + str(Path(d).relative_to(root))
            found[rel] = found.get(rel, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: (-kv[0].count("/"), kv[0])))


def cgroup_pids(rel: str) -> set[int]:
    """Processes directly in cgroup `rel`, in any hierarchy."""
    pids: set[int] = set()
    for root in cgroups.hierarchies():
        try:
            text = (root / rel.strip("/") / "cgroup.procs").read_text()
        except OSError:
            continue
        pids |= {int(p) for p in text.split()}
    return pids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _objects_of(run_root: Path, state: KeyState, tagged: _Tagged) -> list[Orphan]:
    """Every object of one orphaned (or unknown-owner, or dir-less) key, in removal order."""
    key, reason, unknown = state.key, state.reason, state.status == "unknown"

    def orphan(kind: Kind, name: str, extra: str = "") -> Orphan:
        return Orphan(kind, name, key, reason, unknown, extra)

    found = []
    ids = containers(run_root, key) if state.status != "dirless" else []
    found += [orphan("container", cid, str(run_root / key / "runc")) for cid in ids]
    groups = cgroup_paths(key) if key in tagged.cgroup_keys else {}
    own = {f"{cgroups.node_parent(key)}/{cid}" for cid in ids}
    for rel in groups:
        if rel not in own:
            found += [orphan("process", str(pid), f"{_comm(pid)} in {rel}") for pid in sorted(cgroup_pids(rel))]
    if state.status != "dirless":
        found += [orphan("mount", point) for point in mounts_under(run_root / key)]
    found += [orphan("cgroup", rel, f"{n} hierarchies") for rel, n in groups.items()]
    found += [orphan("link", ifname, sandbox_id) for ifname, sandbox_id in tagged.links.get(key, [])]
    if key in tagged.tables:
        found.append(orphan("nft table", f"inet {TABLE_PREFIX}{key}"))
    found += [orphan("claim", str(path)) for path in tagged.claims.get(key, [])]
    if state.status != "dirless":
        found.append(orphan("run dir", str(run_root / key)))
    return found


def find_orphans(run_root: Path = RUN_ROOT, *, skip: Iterable[str] = (), include_unknown: bool = True,
                 settle_s: float = SETTLE_S) -> list[Orphan]:  # fmt: skip
    """Everything on this host of nodes whose data directory is gone (and, with
    include_unknown, of nodes with no owner file, flagged `unknown_owner`), grouped by
    key in removal order. Reads only: runc lists, mountinfo, /sys/fs/cgroup/*/cloche,
    one netlink and one nftables listing, the claim files."""
    skipped = set(skip)
    tagged = _scan_tagged(run_root)
    found: list[Orphan] = []
    for key in run_dir_keys(run_root):
        state = key_state(run_root, key)
        if key in skipped or state.status == "live" or (state.status == "unknown" and not include_unknown):
            continue
        found += _objects_of(run_root, state, tagged)
    dirless = sorted(k for k in tagged.keys() - skipped if not (run_root / k).is_dir())
    if dirless:
        found += _settled_dirless(run_root, dirless, tagged, settle_s)
    return found + _strays(run_root)


def _strays(run_root: Path) -> list[Orphan]:
    """Directories under the run root that belong to no node (such as a literal `*`
    that a shell created through an unexpanded glob, e.g. `runc --root /run/cloche/*/runc`)."""
    try:
        entries = [p for p in run_root.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []
    return [Orphan("run dir", str(p), "-", "not a node's directory")
            for p in sorted(entries) if not KEY_RE.fullmatch(p.name) and p.name not in SHARED_DIRS]  # fmt: skip


def _settled_dirless(run_root: Path, keys: list[str], first: _Tagged, settle_s: float) -> list[Orphan]:
    """Objects of dir-less keys that are still there, still dir-less, after `settle_s`."""
    before = {o for k in keys for o in _objects_of(run_root, KeyState(k, "dirless"), first)}
    if settle_s > 0:
        time.sleep(settle_s)
    again = _scan_tagged(run_root)
    found = []
    for key in keys:
        if key_state(run_root, key).status != "dirless":
            continue
        now = _objects_of(run_root, KeyState(key, "dirless"), again)
        found += [o for o in now if o in before or o.kind == "process"]
    return found
