"""Node runtime lifecycle with real containers: create, exec, pause/resume, stop/start,
kill. Every test runs on both isolation tiers (runc and gVisor's runsc: `tier_node`)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import pytest

from cloche.node.errors import InvalidSpec, InvalidState, SandboxNotFound
from cloche.node.protocol import ExecRequest
from cloche.node.spec import SandboxSpec
from cloche.node.supervisor import ExecResult


@pytest.fixture(scope="module")
def node(tier_node):
    return tier_node


def test_the_kernel_is_the_tiers(node, sandbox):
    """Under gVisor the sandbox talks to the Sentry, which says it is Linux 4.4.0."""
    release = node.exec(sandbox.id, ["uname", "-r"]).stdout.decode().strip()
    if node.isolation == "gvisor":
        assert release == "4.4.0"
    else:
        assert release == os.uname().release
    assert node.rt.get(sandbox.id).spec.isolation == node.isolation


def test_coreutils_ls_and_stat_work(node, sandbox):
    """coreutils passes AT_NO_AUTOMOUNT, which this runsc refuses; gVisor sandboxes preload a shim."""
    r = node.sh(sandbox.id, "ls -la / >/dev/null && stat -c %F /etc/hostname && ls /nonexistent; echo rc=$?")
    assert r.stdout.decode().splitlines() == ["regular file", "rc=2"], r
    assert b"No such file or directory" in r.stderr and b"Invalid argument" not in r.stderr, r


def test_threads_and_subprocesses_work(node, sandbox):
    script = "import subprocess, threading; t = threading.Thread(target=print, args=('t',)); t.start(); t.join(); "
    script += "print(subprocess.run(['echo', 'p'], capture_output=True, text=True).stdout.strip())"
    assert node.exec(sandbox.id, ["python3", "-c", script]).stdout == b"t\np\n"


def test_exec_returns_output_and_exit_code(node, sandbox):
    r = node.sh(sandbox.id, "echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_exec_env_cwd_and_stdin(node, sandbox):
    r = node.exec(sandbox.id, ["sh", "-c", 'echo "$GREETING"; pwd; cat'], env={"GREETING": "hi"},
                  cwd="/tmp", stdin=b"from-stdin")  # fmt: skip
    assert r.stdout == b"hi\n/tmp\nfrom-stdin"


def test_missing_command_is_127(node, sandbox):
    r = node.exec(sandbox.id, ["no-such-binary"])
    assert r.exit_code == 127 and b"no-such-binary" in r.stderr


def test_timeout_kills_process_group(node, sandbox):
    r = node.sh(sandbox.id, "sleep 30 & sleep 30", timeout_s=0.5)
    assert r.timed_out and r.exit_code == 137
    ps = node.sh(sandbox.id, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert b"sleep" not in ps.stdout


def test_output_cap_sets_truncated(node, sandbox):
    r = node.sh(sandbox.id, "head -c 100000 /dev/zero", output_cap=1000)
    assert r.truncated and len(r.stdout) == 1000 and r.exit_code == 0


def test_concurrent_execs_each_get_their_own_result(node, sandbox):
    """cloche-init reuses its handler processes: nothing of one exec reaches another."""

    async def many() -> list[ExecResult]:
        reqs = [ExecRequest(cmd=["/bin/sh", "-c", f"echo {i}; echo e{i} >&2; exit {i}"], output_cap=1 + i % 2)
                for i in range(24)]  # fmt: skip
        return await asyncio.gather(*(node.rt.exec(sandbox.id, r) for r in reqs))

    for _ in range(2):
        for i, r in enumerate(node.run(many())):
            assert r.exit_code == i and r.stdout + r.stderr == f"{i}\ne{i}\n".encode()[: 1 + i % 2], (i, r)
            assert r.truncated, (i, r)
    r = node.sh(sandbox.id, "echo whole")
    assert r.stdout == b"whole\n" and not r.truncated


def test_a_command_inherits_only_its_stdio(node, sandbox):
    """Not the supervisor's listening socket, nor any handler's pipe or connection."""
    r = node.sh(sandbox.id, "ls /proc/$$/fd")
    assert r.stdout.split() == [b"0", b"1", b"2"], r


def test_python_runs_in_base_template(node, sandbox):
    r = node.exec(sandbox.id, ["python3", "-c", "print(6*7)"])
    assert r.stdout == b"42\n"


def test_pause_freezes_and_resume_thaws(node):
    rec = node.create()
    node.run(node.rt.pause(rec.id))
    with pytest.raises(InvalidState):
        node.sh(rec.id, "true")
    node.run(node.rt.resume(rec.id))
    assert node.sh(rec.id, "echo back").stdout == b"back\n"
    node.kill(rec.id)


def test_stop_keeps_files_and_start_brings_them_back(node):
    rec = node.create()
    node.sh(rec.id, "echo keep > /workspace/note; echo gone > /tmp/x")
    node.run(node.rt.stop(rec.id))
    assert node.rt.get(rec.id).state == "stopped"
    node.run(node.rt.start_sandbox(rec.id))
    assert node.sh(rec.id, "cat /workspace/note").stdout == b"keep\n"
    node.kill(rec.id)


def test_kill_leaves_nothing(node):
    rec = node.create()
    rdir = node.rt.run / rec.id
    assert rdir.exists()
    node.kill(rec.id)
    assert not rdir.exists()
    assert not node.rt.records.dir(rec.id).exists()
    assert rec.id not in node.rt.driver.list_ids()
    with pytest.raises(SandboxNotFound):
        node.rt.get(rec.id)
    assert not [m for m in open("/proc/self/mountinfo") if rec.id in m]
    assert not os.path.exists(f"/sys/fs/cgroup/memory/cloche/{node.rt.key}/{rec.id}")


def test_unknown_isolation_is_refused_naming_it(node):
    with pytest.raises(InvalidSpec, match="isolation"):
        node.run(node.rt.create(SandboxSpec(isolation="kata")))


def test_host_files_and_sandbox_files_agree_at_once(node, sandbox):
    """The file API writes the rootfs on the host: the sandbox sees it at once (gVisor:
    --file-access=shared, /tmp bound), and the host sees the sandbox's writes."""
    fs = node.rt.fs(sandbox.id)
    for path in ("/workspace/agree", "/tmp/agree"):
        fs.write(path, b"from host")
        assert node.exec(sandbox.id, ["cat", path]).stdout == b"from host"
        node.sh(sandbox.id, f"echo -n from sandbox > {path}")
        assert fs.read(path, 1 << 20) == b"from sandbox"


def test_close_while_the_pool_refills_leaves_nothing(node, tmp_path):
    from tests.conftest import Node

    n = Node(tmp_path / "data", pool_size=2, isolation=node.isolation)
    run_dir = n.rt.run
    time.sleep(0.02)  # the pool is now starting its first sandboxes
    n.run(n.rt.close(), timeout=60)
    for rec in n.rt.all_records():
        n.run(n.rt.kill(rec.id))
    n.run(n.rt.close(), timeout=60)
    n.loop.stop()
    assert n.rt.driver.list_ids() == []
    assert not [line for line in open("/proc/self/mountinfo") if str(run_dir) in line]


def test_live_resize_of_pids_only_on_runc(node):
    """gVisor's pids limit is its processes' RLIMIT_NPROC, set at boot: a live change is
    refused (409) rather than left unenforced; cpu and memory still change live."""
    rec = node.create(pids=64)
    try:
        limits = node.rt.get(rec.id).spec.limits
        if node.isolation == "gvisor":
            with pytest.raises(InvalidState, match="pids"):
                node.run(node.rt.resize(rec.id, replace(limits, pids=128)))
        else:
            node.run(node.rt.resize(rec.id, replace(limits, pids=128)))
        assert node.run(node.rt.resize(rec.id, replace(limits, cpu=0.5))).spec.limits.cpu == 0.5
    finally:
        node.kill(rec.id)
