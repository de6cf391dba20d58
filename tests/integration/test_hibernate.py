"""Hibernate and resume with real runc, a local blob store and a real S3-compatible
server: nothing is lost, a second hibernate writes only what changed, a hibernated
sandbox holds no memory, cgroup or process, and corrupt snapshots are never started."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cloche.node.spec import IdlePolicy
from cloche.snapshots.store import SnapshotCorrupt
from tests.conftest import Node

MAKE_TREE = """
set -e
cd /workspace
mkdir -p d/empty d/deep/er
echo hello > d/f && chmod 640 d/f && chown 1000:1000 d/f
ln -s d/f sym && ln -s /nonexistent dangling && ln d/f hard
head -c 3000000 /dev/urandom > big
truncate -s 40M sparse && echo tail >> sparse
mkfifo pipe
python3 -c "import os; os.setxattr('d/f', 'user.note', b'kept')"
chmod 4755 d/deep/er
rm /etc/hostname
echo changed > /etc/hosts
"""

FINGERPRINT = r"""
# /etc/resolv.conf is written at every start (it names the sandbox's resolver address, which a wake may change)
cd /workspace
find . /etc -xdev \( -path ./proc -o -path /etc/resolv.conf \) -prune -o -printf '%p %y %m %U %G %s %l\n' | sort
md5sum big sparse d/f
stat -c '%h %i' d/f hard | awk '{print $1}'
du -k sparse | cut -f1
python3 -c "import os; print(os.getxattr('d/f', 'user.note'))"
test -e /etc/hostname && echo hostname-present || echo hostname-gone
cat /etc/hosts
"""


def fingerprint(node: Node, sid: str) -> str:
    r = node.sh(sid, FINGERPRINT)
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode()


@pytest.fixture(scope="module")
def s3_node(tmp_path_factory, s3_server):
    n = Node(tmp_path_factory.mktemp("s3node"), blob_url=s3_server.bucket("snapshots"))
    yield n
    n.close()


def _hibernated_leaves_nothing(node: Node, sid: str) -> None:
    assert node.rt.get(sid).state == "hibernated"
    assert sid not in node.rt.driver.list_ids()
    assert not (node.rt.run / sid).exists()
    assert not [m for m in open("/proc/self/mountinfo") if sid in m]
    assert not [p for p in Path("/sys/fs/cgroup/memory/cloche").rglob(sid)]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_roundtrip_keeps_every_kind_of_file(node, s3_node, where):
    n = node if where == "local" else s3_node
    rec = n.create(disk_mb=128)
    assert n.sh(rec.id, MAKE_TREE).exit_code == 0
    before = fingerprint(n, rec.id)
    assert "hostname-gone" in before and "user.note" not in before
    n.run(n.rt.hibernate(rec.id, keep_local=False))
    _hibernated_leaves_nothing(n, rec.id)
    assert not (n.rt.records.dir(rec.id) / "disk.img").exists()
    n.run(n.rt.wake(rec.id))
    assert fingerprint(n, rec.id) == before
    assert n.sh(rec.id, "du -k /workspace/sparse | cut -f1").stdout.strip() < b"1000"  # still sparse
    n.kill(rec.id)


def test_local_fast_path_resumes_without_the_blob_store(node):
    rec = node.create()
    node.sh(rec.id, "echo fast > /workspace/x")
    node.run(node.rt.hibernate(rec.id))
    assert (node.rt.records.dir(rec.id) / "disk.img").exists()
    blobs = node.rt.snapshots.blobs
    node.rt.snapshots.blobs = None  # any blob access would now fail
    try:
        node.run(node.rt.wake(rec.id))
    finally:
        node.rt.snapshots.blobs = blobs
    assert node.sh(rec.id, "cat /workspace/x").stdout == b"fast\n"
    node.kill(rec.id)


def test_second_hibernate_writes_only_what_changed(node):
    rec = node.create(disk_mb=128)
    node.sh(rec.id, "head -c 20000000 /dev/urandom > /workspace/data")
    node.run(node.rt.hibernate(rec.id, keep_local=False))
    first = node.rt.get(rec.id).last_hibernate
    assert first["bytes_written"] > 19_000_000
    node.run(node.rt.wake(rec.id))
    # change 1% of the workspace in the middle of the file
    node.sh(rec.id, "head -c 200000 /dev/urandom | dd of=/workspace/data bs=1 seek=7000000 conv=notrunc status=none")
    node.run(node.rt.hibernate(rec.id, keep_local=False))
    second = node.rt.get(rec.id).last_hibernate
    # the changed chunks plus the filesystem's metadata and journal blocks, whose number
    # varies with when ext4 commits (bench/hibernate_bench.py measures the exact figure)
    assert second["bytes_written"] <= 0.05 * 20_000_000, second
    assert second["chunks_reused"] > 10 * second["chunks_written"], second
    node.run(node.rt.wake(rec.id))
    assert node.sh(rec.id, "wc -c < /workspace/data").stdout.strip() == b"20000000"
    node.kill(rec.id)


def test_identical_files_are_stored_once_across_sandboxes(node):
    a, b = node.create(), node.create()
    for sid in (a.id, b.id):
        script = "import random; random.seed(7); open('/workspace/same', 'wb').write(random.randbytes(3_000_000))"
        node.exec(sid, ["python3", "-c", script])
    node.run(node.rt.hibernate(a.id))
    node.run(node.rt.hibernate(b.id))
    assert node.rt.get(b.id).last_hibernate["chunks_written"] <= 1  # only what differs (none, or a tiny tail)
    for sid in (a.id, b.id):
        node.kill(sid)


def test_corrupt_chunk_is_refused_and_previous_snapshot_kept(node):
    rec = node.create()
    node.sh(rec.id, "head -c 300000 /dev/urandom > /workspace/blob")
    node.run(node.rt.hibernate(rec.id, keep_local=False))
    snapshot = node.rt.get(rec.id).snapshot
    manifest = node.rt.snapshots.get_manifest(snapshot)
    digest = next(c[0] for e in manifest["entries"] if e["p"] == "workspace/blob" for c in e["c"])
    path = node.rt.snapshots.blobs._path(f"chunks/{digest}")
    good = path.read_bytes()
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(b"tampered"))
    with pytest.raises(SnapshotCorrupt):
        node.run(node.rt.wake(rec.id))
    after = node.rt.get(rec.id)
    assert after.state == "hibernated" and after.snapshot == snapshot
    assert not (node.rt.records.dir(rec.id) / "disk.img").exists()
    path.write_bytes(good)
    node.run(node.rt.wake(rec.id))
    assert node.sh(rec.id, "wc -c < /workspace/blob").stdout.strip() == b"300000"
    node.kill(rec.id)


def test_fork_copies_files_and_diverges(node):
    src = node.create()
    node.sh(src.id, "echo original > /workspace/f; rm /etc/hostname")
    child = node.run(node.rt.fork(src.id))
    assert node.sh(child.id, "cat /workspace/f; test -e /etc/hostname || echo gone").stdout == b"original\ngone\n"
    node.sh(child.id, "echo child > /workspace/f")
    assert node.sh(src.id, "cat /workspace/f").stdout == b"original\n"
    node.run(node.rt.hibernate(src.id, keep_local=False))
    grandchild = node.run(node.rt.fork(src.id))
    assert node.sh(grandchild.id, "cat /workspace/f").stdout == b"original\n"
    for sid in (src.id, child.id, grandchild.id):
        node.kill(sid)


def test_idle_policy_pauses_then_hibernates_and_exec_wakes(node):
    rec = node.create(idle=IdlePolicy(pause_after_s=1, hibernate_after_s=3))
    node.sh(rec.id, "echo idle > /workspace/f")
    deadline = time.time() + 10
    states = set()
    while time.time() < deadline and node.rt.get(rec.id).state != "hibernated":
        states.add(node.rt.get(rec.id).state)
        time.sleep(0.2)
    assert "paused" in states and node.rt.get(rec.id).state == "hibernated"
    node.run(node.rt.wake(rec.id))
    assert node.sh(rec.id, "cat /workspace/f").stdout == b"idle\n"
    node.kill(rec.id)


def test_timeout_can_hibernate_instead_of_kill(node):
    from dataclasses import replace

    rec = node.create(idle=IdlePolicy(on_timeout="hibernate"))
    node.sh(rec.id, "echo kept > /workspace/f")
    rec.spec = replace(rec.spec, timeout_s=1)
    node.run(node.rt.set_timeout(rec.id, 1))
    deadline = time.time() + 10
    while time.time() < deadline and node.rt.get(rec.id).state != "hibernated":
        time.sleep(0.2)
    assert node.rt.get(rec.id).state == "hibernated"
    node.run(node.rt.wake(rec.id))
    assert node.sh(rec.id, "cat /workspace/f").stdout == b"kept\n"
    node.kill(rec.id)


def test_gc_is_safe_against_concurrent_hibernate(node):
    sandboxes = [node.create() for _ in range(3)]
    stop = threading.Event()
    reports = []

    def collector():
        while not stop.is_set():
            reports.append(node.rt.collect_garbage(grace_s=0))

    t = threading.Thread(target=collector)
    t.start()
    try:
        for round_ in range(3):
            for rec in sandboxes:
                node.sh(rec.id, f"head -c 200000 /dev/urandom > /workspace/r{round_}; echo {round_} > /workspace/n")
                node.run(node.rt.hibernate(rec.id, keep_local=False))
                node.run(node.rt.wake(rec.id))
    finally:
        stop.set()
        t.join()
    assert any(r.chunks_deleted for r in reports)  # old rounds' chunks really were collected
    for rec in sandboxes:
        node.run(node.rt.hibernate(rec.id, keep_local=False))
        node.run(node.rt.wake(rec.id))
        assert node.sh(rec.id, "cat /workspace/n; ls /workspace | wc -l").stdout == b"2\n4\n"
        node.kill(rec.id)


def test_wake_on_the_same_node_reads_nothing_from_s3(s3_node, s3_server):
    """The node's chunk cache holds what it uploaded: with the S3 server down, a sandbox
    whose disk was dropped still wakes on the node that hibernated it."""
    rec = s3_node.create()
    s3_node.sh(rec.id, "head -c 1000000 /dev/urandom > /workspace/data && md5sum /workspace/data > /sum")
    s3_node.run(s3_node.rt.hibernate(rec.id, keep_local=False))
    assert not (s3_node.rt.records.dir(rec.id) / "disk.img").exists()
    s3_server.kill()
    try:
        s3_node.run(s3_node.rt.wake(rec.id))
    finally:
        s3_server.start()
    assert s3_node.sh(rec.id, "md5sum -c /sum").exit_code == 0
    s3_node.kill(rec.id)
