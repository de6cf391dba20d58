"""Hostile paths and archives against the host-side file layer (SandboxFS, normalize,
archive.upload/download), with a real sandbox whose user plants symlinks and fifos.

The invariant: whatever the path or archive, the host's files are never read or
written, and the sandbox's files stay owned by the sandbox's own root.

The tests with a sandbox run on both tiers (`node` is `tier_node`, see conftest.py).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cloche.control.errors import status_of
from cloche.node import archive
from cloche.node.errors import FileError
from cloche.node.files import normalize
from cloche.node.templates import PASSWD
from cloche.node.uids import FIRST_UID

HOST_PASSWD = Path("/etc/passwd").read_bytes()


@pytest.fixture(scope="module")
def fs(node, sandbox):
    return node.rt.fs(sandbox.id)


def token() -> str:
    return secrets.token_hex(6)


def cat(node, sandbox_id: str, path: str) -> bytes | None:
    r = node.exec(sandbox_id, ["cat", path])
    return r.stdout if r.exit_code == 0 else None


def host_tmp_has(name: str) -> bool:
    return any(name in p for p in os.listdir("/tmp"))


def test_guard_host_and_sandbox_passwd_differ():
    """The traversal tests tell host from sandbox by /etc/passwd: they must differ."""
    assert PASSWD.encode() != HOST_PASSWD


# ---- normalize ------------------------------------------------------------------------------

BAD_PATHS = [
    "..",
    "../etc/passwd",
    "/../../etc/passwd",
    "/workspace/../../etc/shadow",
    "a/b/../../../../etc/passwd",
    "/workspace/..",
    "x\0y",
    "/etc/passwd\0.txt",
    "/workspace/" + "a" * 256,
    "/workspace/" + "\u00e9" * 128,  # 256 bytes in UTF-8
    "/a" * 2100,  # 4200 bytes
    "",
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda p: repr(p[:24]) + f"/{len(p)}")
def test_normalize_rejects_hostile_paths(path):
    with pytest.raises(FileError) as exc:
        normalize(path)
    assert status_of(exc.value) == 400


@pytest.mark.parametrize(("path", "expected"), [
    ("notes.txt", "/workspace/notes.txt"),
    ("/etc/./passwd", "/etc/passwd"),
    ("//tmp///x/", "/tmp/x"),
    ("/workspace/" + "a" * 255, "/workspace/" + "a" * 255),
    ("...", "/workspace/..."),
    ("..foo/bar..", "/workspace/..foo/bar.."),
])  # fmt: skip
def test_normalize_keeps_legitimate_paths(path, expected):
    assert normalize(path) == expected


# ---- SandboxFS: traversal is clamped to the sandbox root ------------------------------------


@pytest.mark.parametrize("path", ["/../../etc/passwd", "../../../../../etc/passwd",
                                  "/workspace/../../../etc/passwd", "/etc/../../../etc/passwd"])
def test_fs_dotdot_never_leaves_the_sandbox(fs, node, sandbox, path):
    try:
        data = fs.read(path, 1 << 20)
    except FileError as exc:
        assert status_of(exc) in (400, 404)
        return
    assert data != HOST_PASSWD
    assert data == cat(node, sandbox.id, "/etc/passwd")


@pytest.mark.parametrize("path", ["/etc/shadow", "/../../etc/shadow", "/workspace/../../etc/shadow"])
def test_fs_cannot_read_host_shadow(fs, path):
    with pytest.raises(FileError) as exc:
        fs.read(path, 1 << 20)
    assert status_of(exc.value) == 404


def test_fs_listing_above_root_is_the_sandbox_root(fs):
    assert [e.name for e in fs.list("/../../..")] == [e.name for e in fs.list("/")]
    names = {e.name for e in fs.list("/")}
    assert "workspace" in names
    host_only = {n for n in os.listdir("/") if not os.path.lexists(f"{fs.root}/{n}")}
    assert host_only  # e.g. /boot, /home: the host root has entries the sandbox lacks
    assert not names & host_only


def test_fs_rejects_overlong_names_and_paths(fs):
    with pytest.raises(FileError) as exc:
        fs.write("/workspace/" + "n" * 256, b"x")
    assert status_of(exc.value) == 400
    with pytest.raises(FileError) as exc:
        fs.read("/workspace/" + "d/" * 2100 + "f", 100)
    assert status_of(exc.value) in (400, 404)


def test_absolute_paths_are_sandbox_paths(fs, node, sandbox):
    name = f"cloche-test-marker-{token()}"
    fs.write(f"/etc/{name}", b"inside\n")
    try:
        assert not os.path.exists(f"/etc/{name}")
        assert cat(node, sandbox.id, f"/etc/{name}") == b"inside\n"
    finally:
        fs.remove(f"/etc/{name}")
    assert cat(node, sandbox.id, f"/etc/{name}") is None


# ---- planted symlinks ------------------------------------------------------------------------


def test_write_through_symlink_to_root_stays_in_sandbox(fs, node, sandbox):
    name = f"escape-{token()}"
    r = node.sh(sandbox.id, "ln -sfn / /workspace/root && ln -sfn ../../../../../../.. /workspace/up")
    assert r.exit_code == 0
    try:
        fs.write(f"/workspace/root/tmp/{name}", b"via-abs")
        fs.write(f"/workspace/up/tmp/{name}-rel", b"via-rel")
        fs.mkdir(f"/workspace/root/tmp/{name}-dir/sub")
        assert not host_tmp_has(name)
        assert cat(node, sandbox.id, f"/tmp/{name}") == b"via-abs"
        assert cat(node, sandbox.id, f"/tmp/{name}-rel") == b"via-rel"
        assert node.sh(sandbox.id, f"test -d /tmp/{name}-dir/sub").exit_code == 0
        # reading and listing through the links also stays inside
        assert fs.read("/workspace/root/etc/passwd", 1 << 20) == PASSWD.encode()
        assert fs.read("/workspace/up/etc/passwd", 1 << 20) == PASSWD.encode()
        assert {e.name for e in fs.list("/workspace/root")} == {e.name for e in fs.list("/")}
    finally:
        node.sh(sandbox.id, f"rm -rf /workspace/root /workspace/up /tmp/{name}*")


def test_symlink_to_host_secret_reads_sandbox_file(fs, node, sandbox):
    node.sh(sandbox.id, "ln -sfn /etc/shadow /workspace/s && ln -sfn /etc/passwd /workspace/p "
                        "&& ln -sfn /proc/1/root/etc/shadow /workspace/pr")  # fmt: skip
    try:
        with pytest.raises(FileError) as exc:
            fs.read("/workspace/s", 1 << 20)
        assert status_of(exc.value) == 404
        assert fs.read("/workspace/p", 1 << 20) == PASSWD.encode()
        with pytest.raises(FileError):
            fs.read("/workspace/pr", 1 << 20)
        # hard-linking the planted link copies the link, which still resolves inside
        try:
            fs.hardlink("/workspace/hl", "/workspace/s")
        except FileError:
            pass
        with pytest.raises(FileError) as exc:
            fs.read("/workspace/hl", 1 << 20)
        assert status_of(exc.value) == 404
    finally:
        node.sh(sandbox.id, "rm -f /workspace/s /workspace/p /workspace/pr /workspace/hl")


def test_write_over_a_symlink_replaces_the_link_not_its_target(fs, node, sandbox):
    name = f"cloche-target-{token()}"
    node.sh(sandbox.id, f"ln -sfn /tmp/{name} /workspace/lnk")
    try:
        fs.write("/workspace/lnk", b"data")
        assert not host_tmp_has(name)
        assert node.sh(sandbox.id, f"test -e /tmp/{name}").exit_code != 0
        assert node.sh(sandbox.id, "test -L /workspace/lnk").exit_code != 0
        assert cat(node, sandbox.id, "/workspace/lnk") == b"data"
    finally:
        node.sh(sandbox.id, "rm -f /workspace/lnk")


def test_reading_a_planted_fifo_does_not_hang(fs, node, sandbox):
    """A fifo (or a symlink to one) must not block the host thread that serves the read:
    open(O_RDONLY) on a fifo waits for a writer that the sandbox never provides."""
    node.sh(sandbox.id, "mkfifo /workspace/fifo && ln -sfn /workspace/fifo /workspace/fifolink")
    # gVisor keeps a fifo in the Sentry, never on the host's disk: nothing to block on, a 404
    expected = 404 if node.isolation == "gvisor" else 400
    try:
        for path in ("/workspace/fifo", "/workspace/fifolink"):
            for op in (lambda p: fs.read(p, 100), fs.open_read):
                result: dict[str, object] = {}

                def attempt(op=op, path=path, result=result) -> None:
                    try:
                        result["value"] = op(path)
                    except FileError as exc:
                        result["error"] = exc

                t = threading.Thread(target=attempt, daemon=True)
                t.start()
                t.join(3)
                if t.is_alive():  # release the stuck thread before failing
                    fd = os.open(f"{fs.root}/workspace/fifo", os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                    t.join(3)
                    pytest.fail(f"reading {path} blocked on the fifo")
                assert isinstance(result.get("error"), FileError), result
                assert status_of(result["error"]) == expected
    finally:
        node.sh(sandbox.id, "rm -f /workspace/fifo /workspace/fifolink")


def test_read_limit_is_enforced(fs):
    fs.write("/workspace/sized", b"x" * 1000)
    with pytest.raises(FileError) as exc:
        fs.read("/workspace/sized", 999)
    assert status_of(exc.value) == 413
    assert fs.read("/workspace/sized", 1000) == b"x" * 1000
    fs.remove("/workspace/sized")


# ---- ownership and atomic writes -------------------------------------------------------------


def test_files_written_via_fs_are_owned_by_sandbox_root(fs, node, sandbox):
    d = f"/workspace/own-{token()}"
    fs.mkdir(f"{d}/sub")
    fs.write(f"{d}/sub/file", b"x")
    fs.symlink(f"{d}/link", "sub/file")
    r = node.sh(sandbox.id, f"stat -c '%u:%g' {d} {d}/sub {d}/sub/file {d}/link")
    assert r.stdout.split() == [b"0:0"] * 4, r.stdout
    host = os.lstat(f"{fs.root}{d}/sub/file")
    assert host.st_uid == fs.owner and host.st_gid == fs.owner
    assert host.st_uid >= FIRST_UID
    # and the sandbox's unprivileged user cannot write them, but its root can
    r = node.exec(sandbox.id, ["sh", "-c", f"echo x >> {d}/sub/file"], uid=1000, gid=1000)
    assert r.exit_code != 0
    assert node.sh(sandbox.id, f"echo y >> {d}/sub/file && rm -r {d}").exit_code == 0


def test_write_is_atomic_for_concurrent_readers(fs, node, sandbox):
    path = "/workspace/atomic"
    a, b = b"a" * (1 << 20), b"b" * (3 << 20)
    fs.write(path, a)
    reader = r"""
import json, time
seen = set()
end = time.time() + 1.5
while time.time() < end:
    with open("/workspace/atomic", "rb") as f:
        data = f.read()
    seen.add((len(data), data[:1].decode(), data[-1:].decode(), len(set(data))))
print(json.dumps(sorted(seen)))
"""
    with_reader = threading.Thread(
        target=lambda: result.append(node.exec(sandbox.id, ["python3", "-c", reader], timeout_s=20)))
    result: list = []
    with_reader.start()
    time.sleep(0.2)
    writes = 0
    while with_reader.is_alive() and writes < 40:
        fs.write(path, b if writes % 2 == 0 else a)
        writes += 1
    with_reader.join(20)
    assert writes >= 2
    assert result and result[0].exit_code == 0, result
    seen = json.loads(result[0].stdout)
    assert seen, "the reader never read the file"
    for length, first, last, distinct in seen:
        assert (length, first, last, distinct) in ((len(a), "a", "a", 1),
                                                  (len(b), "b", "b", 1)), seen  # fmt: skip
    leftovers = [e.name for e in fs.list("/workspace") if e.name.startswith(".cloche-tmp")]
    assert not leftovers
    fs.remove(path)


def test_failed_write_on_full_disk_leaves_no_temp_file(node):
    rec = node.create(disk_mb=16)
    try:
        fs = node.rt.fs(rec.id)
        with pytest.raises(FileError) as exc:
            fs.write("/workspace/huge", b"z" * (40 << 20))
        assert status_of(exc.value) == 507
        names = [e.name for e in fs.list("/workspace")]
        assert not [n for n in names if n.startswith(".cloche-tmp")], names
        assert "huge" not in names
        # the space came back
        fs.write("/workspace/small", b"z" * (4 << 20))
        assert node.sh(rec.id, "wc -c < /workspace/small").stdout.strip() == str(4 << 20).encode()
    finally:
        node.kill(rec.id)


# ---- tar upload --------------------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool = False) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    buf.seek(0)
    return buf


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "",
          uid: int = 0) -> tarfile.TarInfo:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid = kind, mode, linkname, uid
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 1
    return info


def test_tar_slip_is_neutralised(fs, node, sandbox):
    tag = token()
    dest = f"/workspace/up-{tag}"
    members = [
        (_info(f"../evil-{tag}"), b"dotdot"),
        (_info(f"sub/../../../evil2-{tag}"), b"dotdot2"),
        (_info(f"/tmp/abs-{tag}"), b"absolute"),
        (_info("link", tarfile.SYMTYPE, 0o777, "/"), None),
        (_info(f"link/tmp/x-{tag}"), b"through-link"),
        (_info("hl", tarfile.LNKTYPE, linkname="/etc/shadow"), None),
        (_info("hl2", tarfile.LNKTYPE, linkname="../../../../etc/passwd"), None),
        (_info("mem", tarfile.CHRTYPE, 0o666), None),
        (_info("sda", tarfile.BLKTYPE, 0o666), None),
        (_info("fifo", tarfile.FIFOTYPE), None),
        (_info("suid", mode=0o4755, uid=0), b"#!/bin/sh\nid -u\n"),
        (_info("sgid", mode=0o2775 | 0o1000, uid=4242), b"x"),
        (_info("ok/file.txt", uid=4242), b"fine"),
    ]
    report = archive.upload(fs, dest, _tar(members))
    skipped = {s["name"] for s in report.skipped}
    assert {f"../evil-{tag}", f"sub/../../../evil2-{tag}", f"/tmp/abs-{tag}", "hl", "hl2", "mem",
            "sda", "fifo"} <= skipped  # fmt: skip
    # nothing reached the host
    for name in (f"evil-{tag}", f"evil2-{tag}", f"abs-{tag}", f"x-{tag}"):
        assert not host_tmp_has(name)
        assert not os.path.exists(f"/{name}") and not os.path.exists(f"/workspace/{name}")
    # the skipped names did not land inside the sandbox either
    found = node.sh(sandbox.id, f"find / -xdev \\( -name 'evil*-{tag}' -o -name 'abs-{tag}' \\) "
                                f"2>/dev/null")  # fmt: skip
    assert found.stdout == b""
    # devices and fifos were not created; setuid/setgid/sticky bits are gone
    r = node.sh(sandbox.id, f"cd {dest} && ls -A | sort && stat -c '%n %a %u' suid sgid ok/file.txt")
    listing = r.stdout.decode().split("\n")
    assert not {"mem", "sda", "fifo", "hl", "hl2"} & set(listing), listing
    assert "suid 755 0" in listing and "sgid 775 0" in listing and "ok/file.txt 644 0" in listing
    assert fs.read(f"{dest}/ok/file.txt", 100) == b"fine"
    # a member written through the planted symlink stays in this sandbox (its own /tmp)
    x = cat(node, sandbox.id, f"/tmp/x-{tag}")
    assert x in (None, b"through-link")
    node.sh(sandbox.id, f"rm -rf {dest} /tmp/x-{tag}")


def test_uploaded_setuid_file_does_not_escalate(fs, node, sandbox):
    dest = f"/workspace/sx-{token()}"
    idbin = Path("/usr/bin/id").read_bytes()
    archive.upload(fs, dest, _tar([(_info("id", mode=0o4755), idbin)]))
    r = node.exec(sandbox.id, [f"{dest}/id", "-u"], uid=1000, gid=1000)
    assert r.stdout == b"1000\n", r.stdout
    node.sh(sandbox.id, f"rm -rf {dest}")


def test_tar_with_too_many_entries_is_refused(fs, node, sandbox):
    dest = f"/workspace/many-{token()}"
    members = [(_info(f"f{i}"), b"") for i in range(50)]
    with pytest.raises(FileError) as exc:
        archive.upload(fs, dest, _tar(members), max_entries=20)
    assert status_of(exc.value) == 413
    count = node.sh(sandbox.id, f"ls {dest} | wc -l").stdout.strip()
    assert int(count) <= 20
    node.sh(sandbox.id, f"rm -rf {dest}")


def test_tar_expanding_past_max_bytes_is_refused(fs, node, sandbox):
    dest = f"/workspace/big-{token()}"
    with pytest.raises(FileError) as exc:
        archive.upload(fs, dest, _tar([(_info("a"), b"1" * 600), (_info("b"), b"2" * 600)]),
                       max_bytes=1000)  # fmt: skip
    assert status_of(exc.value) == 413
    # a gzip bomb: 64 MiB of zeros in ~64 KiB of archive
    bomb = _tar([(_info("zeros"), bytes(64 << 20))], compress=True)
    assert len(bomb.getvalue()) < 1 << 20
    with pytest.raises(FileError) as exc:
        archive.upload(fs, dest, bomb, max_bytes=1 << 20)
    assert status_of(exc.value) == 413
    du = node.sh(sandbox.id, f"du -sk {dest}").stdout.split()[0]
    assert int(du) < 1024
    node.sh(sandbox.id, f"rm -rf {dest}")


def test_corrupt_archive_is_a_client_error(fs):
    with pytest.raises(FileError) as exc:
        archive.upload(fs, f"/workspace/c-{token()}", io.BytesIO(gzip.compress(b"not a tar" * 100)))
    assert status_of(exc.value) == 400


def test_download_does_not_follow_links_out(fs, node, sandbox):
    d = f"/workspace/dl-{token()}"
    node.sh(sandbox.id, f"mkdir -p {d} && echo hi > {d}/f && ln -s / {d}/root "
                        f"&& ln -s /etc/shadow {d}/shadow")  # fmt: skip
    out = archive.download(fs, d)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["f"].isreg() and tar.extractfile("f").read() == b"hi\n"
        assert members["root"].issym() and members["root"].linkname == "/"
        assert members["shadow"].issym()
        assert not [n for n in members if n.startswith("root/")]
    out.close()
    # downloading a path through the link gives the sandbox's file, not the host's
    out = archive.download(fs, f"{d}/root/etc/passwd")
    with tarfile.open(fileobj=out) as tar:
        assert tar.extractfile("passwd").read() == PASSWD.encode()
    out.close()
    node.sh(sandbox.id, f"rm -rf {d}")
