"""The wire between the regions of `cloche cluster local --regions`, on real namespaces
and the real relay process: a round trip between regions takes twice the one-way delay,
a large stream crosses it whole and in order, a region reaches the host's services
undelayed and nothing beyond the host, a cut region reaches nothing until mended, and
nothing is left afterwards."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.cluster.local.netns import OWNERS, Regions, sweep_stale
from cloche.cluster.local.process import Child, free_ports, wait_for

DELAY_MS = 30.0
ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
def serve(c):
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
# Times three small round trips to HOST:PORT on one connection and prints the fastest in
# ms, then echoes 8 MB through it and prints the SHA-256 of what came back.
CLIENT = """
import hashlib, socket, sys, threading, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
best = 1e9
for _ in range(3):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1)
    best = min(best, (time.perf_counter() - t) * 1000)
data = (bytes(range(251)) * ((8 << 20) // 251 + 1))[: 8 << 20]  # i % 251 for i < 8 MiB
threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)), daemon=True).start()
got = hashlib.sha256()
while chunk := c.recv(65536):
    got.update(chunk)
print(round(best, 2), got.hexdigest())
"""
# One byte to HOST:PORT and back within 2 s, or a non-zero exit. (Connecting alone proves
# nothing across regions: the relay on the host accepts before it reaches the far side.)
PROBE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
c.sendall(b"x")
assert c.recv(1) == b"x"
"""
SENT = hashlib.sha256((bytes(range(251)) * ((8 << 20) // 251 + 1))[: 8 << 20]).hexdigest()


class Wire:
    def __init__(self, regions: Regions, echo_port: int, service_port: int) -> None:
        self.regions = regions
        self.echo_port = echo_port
        self.service_port = service_port

    def client(self, region: str, host: str, port: int) -> tuple[float, str]:
        """From inside `region`: the fastest small round trip (ms) and the echoed stream's digest."""
        done = subprocess.run(self.regions.nets[region].command([sys.executable, "-c", CLIENT, host, str(port)]),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        ms, digest = done.stdout.split()
        return float(ms), digest


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    """Regions a and b, the relay between them, an echo server in b and one on the host's loopback."""
    logs = tmp_path_factory.mktemp("regions")
    port_file = logs / "relay.port"
    argv = [sys.executable, "-m", "cloche.cluster.local.relay", "--listen", "127.0.0.1:0",
            "--delay-ms", str(DELAY_MS), "--port-file", str(port_file)]  # fmt: skip
    relay = Child("relay", argv, logs / "relay.log")
    (service_port,) = free_ports(1)
    host_echo = Child("host echo", [sys.executable, "-c", ECHO, "127.0.0.1", str(service_port)], logs / "host.log")
    regions = Regions(["a", "b"])
    children = [relay, host_echo]
    try:
        wait_for("the relay's port", lambda: port_file.exists() and port_file.read_text(), 30)
        regions.create([service_port], int(port_file.read_text()))
        b = regions.nets["b"]
        children.append(Child("b echo", b.command([sys.executable, "-c", ECHO, b.address, "7000"]), logs / "b.log"))
        yield Wire(regions, 7000, service_port)
    finally:
        for child in children:
            child.kill()
        regions.remove()


def test_a_round_trip_between_regions_takes_twice_the_delay_and_streams_arrive_whole(wire: Wire) -> None:
    b = wire.regions.nets["b"]
    ms, digest = wait_for("b's echo server", lambda: wire.client("a", b.address, wire.echo_port), 30)
    assert 2 * DELAY_MS <= ms < 2 * DELAY_MS + 25
    assert digest == SENT


def test_a_region_reaches_the_hosts_services_at_its_gateway_without_delay(wire: Wire) -> None:
    a = wire.regions.nets["a"]
    ms, digest = wait_for("the host's echo server", lambda: wire.client("a", a.gateway, wire.service_port), 30)
    assert ms < DELAY_MS / 2
    assert digest == SENT


def test_a_cut_region_reaches_nothing_until_mended(wire: Wire) -> None:
    a, b = wire.regions.nets["a"], wire.regions.nets["b"]

    def answers(region: str, host: str, port: int) -> bool:
        argv = wire.regions.nets[region].command([sys.executable, "-c", PROBE, host, str(port)])
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    assert wait_for("b's echo server", lambda: answers("a", b.address, wire.echo_port), 30)
    b.cut()
    try:
        started = time.monotonic()
        assert not answers("a", b.address, wire.echo_port)
        assert time.monotonic() - started >= 2  # dropped, not refused: a hears nothing
        assert not answers("b", b.gateway, wire.service_port)  # nor does b reach the host's services
        assert answers("a", a.gateway, wire.service_port)  # a itself is not cut
    finally:
        b.mend()
    assert answers("a", b.address, wire.echo_port) and answers("b", b.gateway, wire.service_port)


def test_nothing_from_a_region_is_forwarded_out_of_the_host(wire: Wire) -> None:
    def dropped() -> int:
        listing = subprocess.run(["nft", "list", "table", "ip", wire.regions.table], capture_output=True, text=True)
        return int(re.search(r"counter packets (\d+)", listing.stdout).group(1))  # type: ignore[union-attr]

    before = dropped()
    outside = [sys.executable, "-c", "import socket; socket.create_connection(('203.0.113.9', 80), 1)"]
    assert subprocess.run(wire.regions.nets["a"].command(outside), capture_output=True, timeout=30).returncode != 0
    assert dropped() > before


def host_lists(name: str) -> bool:
    """Whether the host's links or nftables tables include `name`."""
    listings = [subprocess.run(argv, capture_output=True, text=True).stdout
                for argv in (["ip", "-br", "link"], ["nft", "list", "tables"])]  # fmt: skip
    return any(re.search(rf"\b{re.escape(name)}\b", listing) for listing in listings)


def test_regions_leave_no_namespace_veth_or_rules_behind() -> None:
    regions = Regions(["x"])
    regions.create([1], 2)
    net = regions.nets["x"]
    assert Path(f"/run/netns/{net.netns}").exists()
    table = regions.table
    assert host_lists(net.host_if) and host_lists(table)
    regions.remove()
    assert not Path(f"/run/netns/{net.netns}").exists()
    assert not host_lists(net.host_if) and not host_lists(table)


def test_the_regions_of_a_killed_cluster_are_swept() -> None:
    code = ("from cloche.cluster.local.netns import Regions; import time; r = Regions(['z']); r.create([1], 2); "
            "print(r.slot, flush=True); time.sleep(120)")  # fmt: skip
    claimer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert claimer.stdout is not None
    slot = int(claimer.stdout.readline())
    assert slot not in sweep_stale()  # its claimer lives: not stale
    claimer.kill()  # as kill -9 leaves them: nothing removed
    claimer.wait()
    assert Path(f"/run/netns/cloche-r{slot}-z").exists()
    assert slot in sweep_stale()
    assert not Path(f"/run/netns/cloche-r{slot}-z").exists() and not (OWNERS / str(slot)).exists()
    assert not host_lists(f"cloche-{slot}h0") and not host_lists(f"cloche-regions-{slot}")
