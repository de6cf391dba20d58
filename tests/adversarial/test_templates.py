"""A busybox-only template (no Python, no libc, no host /usr): the supervisor, exec,
timeouts, stdin and the files API must all work there, and so must the isolation.
Runs on both tiers (`node` is `tier_node`, see conftest.py)."""

from __future__ import annotations

import pytest

from cloche.control.errors import status_of
from cloche.node.errors import FileError


@pytest.fixture(scope="module")
def bb(node, busybox_template):
    node.rt.templates.import_tar("busybox", str(busybox_template))
    rec = node.create(template="busybox")
    yield rec
    node.kill(rec.id)


def test_runs_without_python_or_host_usr(node, bb):
    assert node.exec(bb.id, ["ls", "/usr/bin/python3"]).exit_code != 0
    assert node.exec(bb.id, ["python3", "-c", "1"]).exit_code == 127
    r = node.sh(bb.id, "ls -A /usr 2>/dev/null | wc -l; echo hi from $(id -u)")
    assert r.stdout == b"0\nhi from 0\n", r.stdout
    r = node.exec(bb.id, ["busybox", "--help"])
    assert b"BusyBox" in r.stdout + r.stderr


def test_exit_codes_env_and_cwd(node, bb):
    r = node.sh(bb.id, "echo out; echo err >&2; exit 7")
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = node.exec(bb.id, ["sh", "-c", 'echo "$X"; pwd'], env={"X": "y"}, cwd="/tmp")
    assert r.stdout == b"y\n/tmp\n"
    assert node.exec(bb.id, ["no-such-binary"]).exit_code == 127


def test_stdin_is_delivered(node, bb):
    data = bytes(range(256)) * 1000
    r = node.exec(bb.id, ["wc", "-c"], stdin=data)
    assert r.stdout.strip() == str(len(data)).encode()
    r = node.exec(bb.id, ["cat"], stdin=b"line one\nline two\n")
    assert r.stdout == b"line one\nline two\n"


def test_timeout_kills_the_process_group(node, bb):
    r = node.sh(bb.id, "sleep 30 & sleep 30", timeout_s=0.5)
    assert r.timed_out and r.exit_code == 137
    assert r.duration_ms < 5000
    ps = node.sh(bb.id, "ps -o args | grep -c '[s]leep 30'")
    assert ps.stdout.strip() == b"0"


def test_output_cap(node, bb):
    r = node.sh(bb.id, "head -c 100000 /dev/zero", output_cap=1000)
    assert r.truncated and len(r.stdout) == 1000


def test_files_api_works(node, bb):
    fs = node.rt.fs(bb.id)
    fs.mkdir("/workspace/proj/src")
    fs.write("/workspace/proj/src/main.txt", b"from the host\n")
    assert node.exec(bb.id, ["cat", "/workspace/proj/src/main.txt"]).stdout == b"from the host\n"
    node.sh(bb.id, "echo from inside > /workspace/proj/inner.txt")
    assert fs.read("/workspace/proj/inner.txt", 1 << 20) == b"from inside\n"
    names = {e.name: e.type for e in fs.list("/workspace/proj")}
    assert names == {"src": "dir", "inner.txt": "file"}
    assert node.sh(bb.id, "stat -c %u:%g /workspace/proj/src/main.txt").stdout == b"0:0\n"
    fs.rename("/workspace/proj/inner.txt", "/workspace/proj/moved.txt")
    fs.remove("/workspace/proj", recursive=True)
    assert node.exec(bb.id, ["ls", "/workspace/proj"]).exit_code != 0
    # the template's own layout is visible through the files API, the host's is not
    assert fs.stat("/bin/busybox").type == "file"
    with pytest.raises(FileError) as exc:
        fs.read("/usr/bin/python3", 1 << 20)
    assert status_of(exc.value) == 404


def test_isolation_holds_in_busybox(node, bb):
    r = node.exec(bb.id, ["grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"])
    if node.isolation == "gvisor":
        # the Sentry's uid_map is its own and its status has no NoNewPrivs: the host side
        # of both is checked by test_isolation.py (gofer's uid, prctl) on the base template
        assert r.stdout.split() == [b"Seccomp:", b"2"]
    else:
        assert r.stdout.split() == [b"NoNewPrivs:", b"1", b"Seccomp:", b"2"]
        inside, host, _ = (int(x) for x in node.exec(bb.id, ["cat", "/proc/self/uid_map"]).stdout.split())
        assert inside == 0 and host >= 1 << 24
    r = node.sh(bb.id, "ps -o pid | wc -l")
    assert int(r.stdout) <= 8
    # the template can be killed and recreated from the same template
    again = node.create(template="busybox")
    try:
        assert node.sh(again.id, "echo again").stdout == b"again\n"
    finally:
        node.kill(again.id)
