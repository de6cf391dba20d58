"""What cloche nodes whose data directory vanished left on the host, found and removed.

Why: a node's durable half (records, disk images) lives in its data directory and its
runtime half (runc containers, mounts, cgroups, veth links, an nftables table, host-wide
uid and address claims) on the host, tagged with the node key (a hash of the data dir's
path). A node that restarts on the same data dir reconciles its own leftovers. But when
the data dir is deleted or moved (a crashed test run, a machine re-provisioned, a data
dir renamed), no node will ever compute that key again: its sandboxes would run forever,
its loop devices, uid ranges and addresses would stay taken. This module finds them.

A key is judged by its runtime directory `<run root>/<key>/`:

* `owner` names a data directory that does not exist: orphaned, everything goes;
* `owner` names one that exists: live, nothing of it is touched;
* no `owner` file (a node started before owner files existed, or one starting right
  now): unknown owner, reported but removed only when the caller forces it;
* no runtime directory at all, but objects tagged with the key (links, the table,
  cgroups, claims): orphaned, since a live node always has its directory. A node that
  is closing removes its directory a moment before its table, so such objects count
  only when they are still there after a short settle and the directory is still absent.

Every removal re-checks, just before it acts, that the object is still the orphan's
(claim files still name the key, a link still has its alias, the key is still not
live), so running it next to live nodes is safe. The node runtime calls it at start for
every other key: `collect(run_root, skip={own_key}, include_unknown=False)`.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cloche.node import cgroups, linux

if TYPE_CHECKING:
    from cloche.node.net.nft import Nft

log = logging.getLogger("cloche.node.orphans")

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


@dataclass
class _Tagged:
    """Key-tagged objects outside the runtime directories, by key."""

    links: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> (ifname, sandbox id)
    tables: set[str] = field(default_factory=set)  # keys with an inet cloche_<key> table
    cgroup_keys: set[str] = field(default_factory=set)
    claims: dict[str, list[Path]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        return set(self.links) | self.tables | self.cgroup_keys | set(self.claims)


# ---- judging keys -------------------------------------------------------------------


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


# ---- scanning ------------------------------------------------------------------------


def _scan_links() -> dict[str, list[tuple[str, str]]]:
    from cloche.node.net import links

    found: dict[str, list[tuple[str, str]]] = {}
    for ifname, alias in links.ours(ALIAS_PREFIX):
        key, _, sandbox_id = alias[len(ALIAS_PREFIX) :].partition(":")
        if KEY_RE.fullmatch(key):
            found.setdefault(key, []).append((ifname, sandbox_id))
    return found


@functools.cache
def _nft() -> Nft:
    from cloche.node.net.nft import Nft

    return Nft()  # one libnftables context for the process (a context is never freed)


def _nft_tables() -> list[tuple[str, str]]:
    from cloche.node.errors import RuntimeFailure

    try:
        return _nft().tables()
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


def _runc() -> str | None:
    return shutil.which("runc")


def containers(run_root: Path, key: str) -> list[str]:
    """Ids of the runc containers in the key's state root (without creating it)."""
    state_root = run_root / key / "runc"
    binary = _runc()
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


# ---- removing ------------------------------------------------------------------------


class _Gone(Exception):
    """The object disappeared (or stopped being the orphan's) before it was removed."""


def _remove_container(o: Orphan) -> str:
    state_root = Path(o.extra)
    binary = _runc()
    if not (state_root / o.name).exists():
        raise _Gone
    if binary is None:
        raise OSError("runc is not installed")
    proc = subprocess.run([binary, "--root", str(state_root), "delete", "--force", o.name],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0 and "does not exist" not in proc.stderr:
        raise OSError(f"runc delete failed: {proc.stderr.strip()[:300]}")
    return "deleted (killed)"


def _thaw(rel: str) -> None:
    for root in cgroups.hierarchies():
        d = root / rel.strip("/")
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                (d / name).write_text(value)
            except OSError:
                pass


def _in_cgroup(pid: int, rel: str) -> bool:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    paths = {line.split(":", 2)[2] for line in lines if line.count(":") >= 2}
    return any(p == rel or p.startswith(rel + "/") for p in paths)


def _kill(pid: int, rel: str) -> bool:
    """SIGKILL `pid` if it is (still) in cgroup `rel`; a pidfd makes pid reuse harmless."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not _in_cgroup(pid, rel):
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def _empty(rel: str, deadline: float) -> None:
    """Thaw cgroup `rel` and kill what is in it until it is empty (or time runs out)."""
    while True:
        pids = cgroup_pids(rel)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise OSError(f"processes {sorted(pids)[:10]} would not die")
        _thaw(rel)
        for pid in pids:
            _kill(pid, rel)
        time.sleep(0.02)


def _remove_process(o: Orphan) -> str:
    rel = o.extra.rpartition(" in ")[2]
    _thaw(rel)
    if not _kill(int(o.name), rel):
        raise _Gone
    return "killed"


def _remove_mount(o: Orphan) -> str:
    if o.name not in linux.mountpoints():
        raise _Gone
    for attempt in range(5):
        try:
            linux.umount(o.name, detach=False)
            return "unmounted"
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                raise _Gone from None
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.05 * (attempt + 1))
    linux.umount(o.name, detach=True)
    return "unmounted (lazy: it was busy)"


def _tree(rel: str) -> list[tuple[Path, str]]:
    """(directory, cgroup path) of `rel` and everything below it in every hierarchy, deepest first."""
    found = []
    for root in cgroups.hierarchies():
        base = root / rel.strip("/")
        if base.is_dir():
            found += [(Path(d), "/" + str(Path(d).relative_to(root))) for d, _, _ in os.walk(base)]
    return sorted(found, key=lambda dr: -dr[1].count("/"))


def _remove_cgroup(o: Orphan) -> str:
    """rmdir the cgroup (and anything below it that appeared since) in every hierarchy,
    after killing whatever still runs in it."""
    deadline = time.monotonic() + KILL_WAIT_S
    tree = _tree(o.name)
    if not tree:
        raise _Gone
    for rel in dict.fromkeys(rel for _, rel in tree):
        _empty(rel, deadline)
    for d, _ in tree:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # the last task's exit is still being accounted
    return "removed"


def _remove_link(o: Orphan) -> str:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    alias = f"{ALIAS_PREFIX}{o.key}:{o.extra}"
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=o.name)
        if not found:
            raise _Gone
        (msg,) = ip.get_links(found[0])
        if msg.get_attr("IFLA_IFALIAS") != alias:
            raise _Gone  # the name now belongs to someone else's link
        try:
            ip.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise _Gone from None
            raise
    return "deleted"


def _remove_table(o: Orphan) -> str:
    from cloche.node.net.nft import NftError

    family, _, name = o.name.partition(" ")
    nft = _nft()
    if (family, name) not in nft.tables():
        raise _Gone
    try:
        nft.run(f"delete table {o.name}")
    except NftError:
        if (family, name) not in nft.tables():
            raise _Gone from None
        raise
    return "deleted"


def _remove_claim(o: Orphan) -> str:
    path = Path(o.name)
    try:
        if path.read_text() != o.key:
            raise _Gone  # released and claimed again by another node
        path.unlink()
    except FileNotFoundError:
        raise _Gone from None
    return "released"


def _remove_run_dir(o: Orphan) -> str:
    path = Path(o.name)
    if not path.is_dir():
        raise _Gone
    left = mounts_under(path)
    if left:
        raise OSError(f"still mounted: {', '.join(left[:3])}")
    shutil.rmtree(path, onerror=_unless_missing)
    return "removed"


def _unless_missing(
    func: Callable[..., object], path: str, exc_info: tuple[type[BaseException], BaseException, object]
) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):  # another collector got there first
        raise exc_info[1]


REMOVERS: dict[Kind, Callable[[Orphan], str]] = {
    "container": _remove_container,
    "process": _remove_process,
    "mount": _remove_mount,
    "cgroup": _remove_cgroup,
    "link": _remove_link,
    "nft table": _remove_table,
    "claim": _remove_claim,
    "run dir": _remove_run_dir,
}


def _still_orphaned(run_root: Path, o: Orphan) -> bool:
    """The key was judged from its owner file or its missing directory: is that still so?"""
    status = key_state(run_root, o.key).status
    if o.reason == "no runtime dir":
        return status == "dirless"
    return status in ("orphaned", "dirless") or (status == "unknown" and o.unknown_owner)


def remove(orphans: Iterable[Orphan], *, run_root: Path = RUN_ROOT, force_unknown: bool = False,
           on_done: Callable[[Orphan, str], None] | None = None) -> list[Failure]:  # fmt: skip
    """Remove the orphans key by key, kind by kind (containers, stray processes, mounts,
    cgroups, links, the table, claims, the runtime directory). Those of unknown owner
    are kept unless `force_unknown`. `on_done(orphan, action)` is told what happened to
    each; the return value lists what could not be removed."""
    failures = []
    rank = {kind: i for i, kind in enumerate(ORDER)}
    by_key: dict[str, list[Orphan]] = {}
    for o in orphans:
        by_key.setdefault(o.key, []).append(o)
    for key in by_key:
        for o in sorted(by_key[key], key=lambda o: rank[o.kind]):  # stable: cgroups stay deepest first
            action = _remove_one(run_root, o, force_unknown, failures)
            if on_done:
                on_done(o, action)
    return failures


def _remove_one(run_root: Path, o: Orphan, force_unknown: bool, failures: list[Failure]) -> str:
    if o.unknown_owner and not force_unknown:
        return "kept (unknown owner)"
    if not _still_orphaned(run_root, o):
        return "kept (its node is back)"
    try:
        return REMOVERS[o.kind](o)
    except _Gone:
        return "already gone"
    except Exception as exc:
        failures.append(Failure(o, str(exc) or type(exc).__name__))
        return f"FAILED: {exc}"


def collect(run_root: Path = RUN_ROOT, *, skip: Iterable[str] = (), include_unknown: bool = False,
            settle_s: float = SETTLE_S) -> list[Failure]:  # fmt: skip
    """Find and remove in one go, logging each removal (for a node's start: pass its own
    key in `skip`; nodes of unknown owner are left alone)."""

    def logged(o: Orphan, action: str) -> None:
        log.info("orphan of node %s (%s): %s %s: %s", o.key, o.reason, o.kind, o.name, action)

    found = find_orphans(run_root, skip=skip, include_unknown=include_unknown, settle_s=settle_s)
    failures = remove(found, run_root=run_root, force_unknown=include_unknown, on_done=logged)
    for f in failures:
        log.warning("could not remove %s %s of node %s: %s", f.orphan.kind, f.orphan.name, f.orphan.key, f.error)
    return failures
