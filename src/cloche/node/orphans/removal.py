"""Removing what vanished nodes left, one object at a time, each re-checked first.

Why it exists: every removal races live nodes and other collectors. Before it acts,
each remover checks the object is still the orphan's (a claim file still names the
key, a link still has its alias, the key is still not live) and reports "already gone"
otherwise; cgroups are emptied (thawed, their processes killed by pidfd) before rmdir.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cloche.node import cgroups, linux
from cloche.node.orphans.model import ALIAS_PREFIX, KILL_WAIT_S, ORDER, RUN_ROOT, Failure, Kind, Orphan, key_state
from cloche.node.orphans.scan import cgroup_pids, mounts_under, nft, runc


class _Gone(Exception):
    """The object disappeared (or stopped being the orphan's) before it was removed."""


def _remove_container(o: Orphan) -> str:
    state_root = Path(o.extra)
    binary = runc()
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
    ctx = nft()
    if (family, name) not in ctx.tables():
        raise _Gone
    try:
        ctx.run(f"delete table {o.name}")
    except NftError:
        if (family, name) not in ctx.tables():
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
