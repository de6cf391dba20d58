"""`cloche node gc`: a node whose data directory vanished (here: a crash, then the data dir
deleted) leaves containers, mounts, cgroups, links, its nft table and host-wide claims
that no later node would ever adopt; gc removes exactly those, and leaves a live node
on the same host alone. What is left is checked with runc, mountinfo, /sys/fs/cgroup,
netlink and nftables directly, not through the module under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cloche.node import cgroups, orphans
from cloche.node.net import links
from cloche.node.net.nft import Nft
from cloche.node.runtime import NodeRuntime
from tests.conftest import Node

RUN_ROOT = Path("/run/cloche")


def _gc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "cloche.cli", "node", "gc", *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def _mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def host_objects(key: str) -> dict[str, set[str]]:
    """Everything on the host tagged with `key`, by kind (names as gc reports them)."""
    run = RUN_ROOT / key
    found: dict[str, set[str]] = {k: set() for k in orphans.ORDER if k != "process"}
    if (run / "runc").is_dir():
        listing = subprocess.run(["runc", "--root", str(run / "runc"), "list", "--format", "json"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        found["container"] = {c["id"] for c in json.loads(listing or "null") or []}
    found["mount"] = {p for p in _mountpoints() if p.startswith(f"{run}/")}
    for root in cgroups.hierarchies():
        base = root / cgroups.PARENT / key
        if base.is_dir():
            found["cgroup"] |= {"/" + str(Path(d).relative_to(root)) for d, _, _ in os.walk(base)}
    found["link"] = {name for name, _ in links.ours(f"cloche:{key}:")}
    found["nft table"] = {f"{fam} {name}" for fam, name in Nft().tables() if name == f"cloche_{key}"}
    for sub in ("uids", "net"):
        for path in (RUN_ROOT / sub).iterdir():
            try:
                if path.read_text() == key:
                    found["claim"].add(str(path))
            except OSError:
                continue
    if run.exists():
        found["run dir"] = {str(run)}
    return found


def _loop_devices_on(prefix: str) -> list[str]:
    backing = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            name = (dev / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if name.startswith(prefix):
            backing.append(f"{dev.name}: {name}")
    return backing


def _ensure_owner(rt: NodeRuntime) -> None:
    """Nodes write their owner file at start; a runtime that predates that gets one here."""
    owner = rt.run / "owner"
    if not owner.exists():
        owner.write_text(str(rt.config.data_dir.resolve()))


def _crash(node: Node) -> None:
    """What a killed server leaves: its sandboxes keep running, nothing is cleaned up."""
    deadline = time.time() + 60
    while node.rt.disk_stock._filling and time.time() < deadline:  # mkfs into the data dir we delete next
        time.sleep(0.05)
    node.loop.stop()


def test_gc_removes_what_a_vanished_node_left_and_nothing_else(tmp_path: Path) -> None:
    live_dir, gone_dir = tmp_path / "live", tmp_path / "gone"
    live_dir.mkdir()
    gone_dir.mkdir()
    live = Node(live_dir)
    gone: Node | None = None
    gone_key = ""
    try:
        survivor = live.create()
        _ensure_owner(live.rt)
        live_before = host_objects(live.rt.key)

        gone = Node(gone_dir)
        gone_key = gone.rt.key
        a, b = gone.create(), gone.create()
        _ensure_owner(gone.rt)
        _crash(gone)
        shutil.rmtree(gone_dir)
        left = host_objects(gone_key)
        assert left["container"] == {a.id, b.id}
        assert {Path(p).name for p in left["mount"]} == {"rootfs", "lower", "disk"} and len(left["mount"]) == 6
        assert {f"/cloche/{gone_key}", f"/cloche/{gone_key}/{a.id}", f"/cloche/{gone_key}/{b.id}"} <= left["cgroup"]
        assert len(left["link"]) == 2 and left["nft table"] == {f"inet cloche_{gone_key}"}
        assert len(left["claim"]) == 4  # a uid range and an address pair per sandbox
        assert left["run dir"] == {str(RUN_ROOT / gone_key)}

        # --dry-run lists every object of the vanished node, none of the live one, and changes nothing.
        dry = _gc("--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        listed = json.loads(dry.stdout)
        ours = [o for o in listed if o["key"] == gone_key]
        assert all(o["action"] == "would remove" and not o["unknown_owner"] for o in ours)
        assert all(o["reason"] == f"data dir {gone_dir.resolve()} is gone" for o in ours)
        by_kind = {kind: {o["name"] for o in ours if o["kind"] == kind} for kind in left}
        assert by_kind == left
        assert not [o for o in ours if o["kind"] == "process"]  # every process is a container's
        assert not [o for o in listed if o["key"] == live.rt.key]
        assert "would be removed" in dry.stderr
        assert host_objects(gone_key) == left

        # gc removes each of them, reporting it, and then nothing of that key is left.
        run = _gc()
        assert run.returncode == 0, run.stdout + run.stderr
        lines = [line.split() for line in run.stdout.splitlines() if gone_key in line.split()]
        for kind, names in left.items():
            for name in names:
                row = next((r for r in lines if " ".join(r).startswith(f"{kind} {name} {gone_key} ")), None)
                assert row is not None, (kind, name, run.stdout)
                done = row[len(kind.split()) + len(name.split()) + 1]
                if kind == "link" or (kind == "cgroup" and Path(name).name in (a.id, b.id)):
                    # a veth goes with its container's namespace, a container's cgroup with runc delete
                    assert done in ("deleted", "removed", "already"), row
                else:
                    assert done in ("deleted", "unmounted", "removed", "released"), row
        assert "removed" in run.stderr and "error" not in run.stderr
        assert host_objects(gone_key) == {kind: set() for kind in left}
        assert _loop_devices_on(str(gone_dir)) == []

        # The live node was not touched: the same objects, and its sandbox still answers.
        assert host_objects(live.rt.key) == live_before
        assert live.sh(survivor.id, "echo alive").stdout == b"alive\n"
        again = json.loads(_gc("--dry-run", "--json").stdout)
        assert [o for o in again if o["key"] in (gone_key, live.rt.key)] == []
    finally:
        if gone_key:
            leftovers = [o for o in orphans.find_orphans(RUN_ROOT) if o.key == gone_key]
            orphans.remove(leftovers, force_unknown=True)
        live.close()


def test_unknown_owner_is_kept_and_objects_without_a_runtime_dir_are_removed(tmp_path: Path) -> None:
    """A node with no owner file (one that predates them) is reported, not touched; what a
    node left outside its runtime directory, once that directory is gone, is removed."""
    old_dir, bare_dir = tmp_path / "old", tmp_path / "bare"
    old_dir.mkdir()
    bare_dir.mkdir()
    old, bare = Node(old_dir), Node(bare_dir)
    keys = (old.rt.key, bare.rt.key)
    try:
        old.create()
        bare.create()
        for node in (old, bare):
            _crash(node)
        shutil.rmtree(old_dir)
        shutil.rmtree(bare_dir)
        (old.rt.run / "owner").unlink(missing_ok=True)
        old_left = host_objects(old.rt.key)
        # `bare` loses its runtime dir: its containers and mounts are gone, its table, cgroup and claims stay.
        bare.rt.driver.delete_all()
        for point in sorted((p for p in _mountpoints() if p.startswith(f"{bare.rt.run}/")), key=len, reverse=True):
            subprocess.run(["umount", point], check=True)
        shutil.rmtree(bare.rt.run)
        bare_left = host_objects(bare.rt.key)
        assert bare_left["nft table"] and bare_left["claim"] and bare_left["cgroup"]

        run = _gc("--json")
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert {(o["kind"], o["name"]) for o in report if o["key"] == old.rt.key} >= {
            (kind, name) for kind, names in old_left.items() for name in names
        }
        assert {o["action"] for o in report if o["key"] == old.rt.key} == {"kept (unknown owner)"}
        assert host_objects(old.rt.key) == old_left
        mine = [o for o in report if o["key"] == bare.rt.key]
        assert {o["reason"] for o in mine} == {"no runtime dir"}
        assert {(o["kind"], o["name"]) for o in mine} == {(k, n) for k, names in bare_left.items() for n in names}
        assert host_objects(bare.rt.key) == {kind: set() for kind in bare_left}
        assert "--force-unknown" in run.stderr
    finally:
        leftovers = [o for o in orphans.find_orphans(RUN_ROOT) if o.key in keys]
        assert orphans.remove(leftovers, force_unknown=True) == []
        for key in keys:
            assert host_objects(key) == {kind: set() for kind in host_objects(key)}
        _drop_empty_cgroup_parent()


def _drop_empty_cgroup_parent() -> None:
    """The shared `/cloche` cgroup stays after gc (a node may be about to use it); with no
    node left, remove it as the last node's close would (rmdir fails unless it is empty)."""
    for root in cgroups.hierarchies():
        try:
            os.rmdir(root / cgroups.PARENT)
        except OSError:
            pass


def test_a_stray_directory_from_an_unexpanded_glob_is_removed():
    """A literal `/run/cloche/*` (a shell's unexpanded glob, as runc --root creates it)
    belongs to no node: gc reports it and removes it, and leaves the shared claim dirs."""
    stray = Path("/run/cloche") / "*" / "runc"
    stray.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run([sys.executable, "-m", "cloche.cli", "node", "gc", "--dry-run"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "/run/cloche/*" in listed.stdout and stray.exists()
    done = subprocess.run([sys.executable, "-m", "cloche.cli", "node", "gc"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not stray.parent.exists()
    assert (Path("/run/cloche") / "uids").is_dir()
