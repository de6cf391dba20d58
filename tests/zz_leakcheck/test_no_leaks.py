"""Runs last, in a pytest session of its own (`make test`; its directory also sorts last):
after the whole suite, nothing of cloche's may remain on the host: no runc or runsc
container (nor runsc's gofer and sandbox processes), mount, cgroup, loop device, netns,
server, node or service process, or runtime directory. Every earlier module kills what
it made; this proves it. In a session of its own, the other sessions' session-wide
fixtures (an etcd, an S3 server) are gone too."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cloche.node import cgroups
from tests.netlab import leftover_network_objects

RUN_ROOT = Path("/run/cloche")


def test_no_runtime_directories_uid_ranges_or_address_claims():
    leftovers = [p.name for p in RUN_ROOT.iterdir() if p.name not in ("uids", "net")] if RUN_ROOT.exists() else []
    assert leftovers == []
    for claims in ("uids", "net"):
        held = list((RUN_ROOT / claims).iterdir()) if (RUN_ROOT / claims).exists() else []
        assert held == [], claims


def test_no_network_objects():
    """No veth, netns, nftables table or tc qdisc of cloche's is left."""
    found = leftover_network_objects(("clv", "clp", "cloche"))
    assert found == {k: [] for k in found}, found
    aliased = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "cloche:" not in aliased


def test_no_runc_or_runsc_containers():
    found = []
    for binary in ("runc", "runsc"):
        for state_root in RUN_ROOT.glob(f"*/{binary}"):
            out = subprocess.run([binary, "--root", str(state_root), "list", "--format", "json"],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
            found += [c["id"] for c in json.loads(out or "null") or []]
    assert found == []


def test_no_mounts():
    with open("/proc/self/mountinfo") as f:
        ours = [line for line in f if "/run/cloche/" in line]
    assert ours == []


def test_no_cgroups():
    assert cgroups.leftovers() == []


def test_no_loop_devices_on_sandbox_disks():
    backing = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            name = (dev / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if name.endswith("disk.img"):
            backing.append(name)
    assert backing == []


def _processes() -> list[tuple[str, str, list[bytes]]]:
    """(pid, executable, argv) of every process of the host that can be read."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.append((pid, os.readlink(f"/proc/{pid}/exe"), Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")))
        except OSError:
            continue
    return found


def test_no_supervisor_processes():
    procs = []
    for pid, exe, argv in _processes():
        runsc_of_ours = argv[0] in (b"runsc-gofer", b"runsc-sandbox") and any(b"/run/cloche/" in a for a in argv)
        if "cloche-init" in exe or runsc_of_ours:
            procs.append((pid, exe))
    assert procs == []


def test_no_servers_nodes_or_services_the_tests_started():
    """No cloche server, node, cluster or CLI command (nor the tests' zygotes, for CLI
    commands and servers, and their forks), and no SeaweedFS, etcd or PostgreSQL a test
    started: their data is in a `cloche-` directory (the suite's shared PostgreSQL,
    scripts/postgres-test.sh's, runs on purpose; the host's own services are not ours)."""
    shared_pg = os.environ.get("CLOCHE_PG_DIR", "/var/tmp/cloche-pg").encode()

    def service_of_ours(argv: list[bytes]) -> bool:
        return any(b"/cloche-" in a and not a.startswith(shared_pg) for a in argv)

    procs = []
    for pid, exe, argv in _processes():
        ours = (b"cloche.cli", b"tests.cli_zygote")
        cloche = any(a in argv for a in ours) or any(a.endswith(b"/bin/cloche") for a in argv[:2])
        if cloche or (os.path.basename(exe) in ("weed", "etcd", "postgres") and service_of_ours(argv)):
            procs.append((pid, b" ".join(argv[:4]).decode(errors="replace")))
    assert procs == []
