"""Network isolation from inside a sandbox without an egress policy (`network: "none"`):
nothing answers beyond its own loopback, no raw sockets, no network administration, and
neither the host's nor another sandbox's loopback services are reachable.

Every test runs on both tiers (`node` is `tier_node`, see conftest.py); under gVisor the
sandbox's side is the Sentry's netstack, the node's side (veth, nftables) is the same.

The sandbox has its routed veth, but the node's firewall rejects everything it sends
(fast: a reset or an ICMP error, not a timeout). The suite's egress guard proves none of
it left through a real interface. Policies that do allow egress are tested in
tests/network.
"""

from __future__ import annotations

import json
import secrets
import socket
import time

import pytest

CONNECT = r"""
import errno, json, socket, sys, time
out = {}
for host, port, family in %s:
    s = socket.socket(getattr(socket, family), socket.SOCK_STREAM)
    s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, port))
        out[f"{host}:{port}"] = ["connected", time.monotonic() - t]
    except OSError as e:
        out[f"{host}:{port}"] = [errno.errorcode.get(e.errno, str(e)), time.monotonic() - t]
    finally:
        s.close()
print(json.dumps(out))
"""


def connect_from(node, sandbox_id: str, targets: list[tuple[str, int, str]]) -> dict:
    r = node.exec(sandbox_id, ["python3", "-c", CONNECT % repr(targets)], timeout_s=30)
    assert r.exit_code == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def other(node):
    rec = node.create()
    yield rec
    node.kill(rec.id)


def test_nothing_reachable_without_egress(node, sandbox, internet):
    results = connect_from(node, sandbox.id, [(internet.hosts["allowed"], 80, "AF_INET"),
                                              (internet.dns, 53, "AF_INET"),
                                              ("10.0.0.1", 80, "AF_INET"),
                                              ("169.254.169.254", 80, "AF_INET"),
                                              ("2001:db8::1", 53, "AF_INET6")])  # fmt: skip
    for target, (outcome, elapsed) in results.items():
        assert outcome in ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"), (target, outcome)
        assert elapsed < 1.0, f"{target} took {elapsed:.2f}s: a denied connection must fail fast"


def test_udp_and_dns_have_nowhere_to_go(node, sandbox):
    r = node.exec(sandbox.id, ["python3", "-c", r"""
import socket, errno
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", ("8.8.8.8", 53))
    print("sent")
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    socket.getaddrinfo("example.com", 80)
    print("resolved")
except OSError as e:
    print("noresolve")
"""], timeout_s=30)  # fmt: skip
    sent, resolved = r.stdout.split()
    assert sent in (b"sent", b"ENETUNREACH", b"EHOSTUNREACH", b"ECONNREFUSED") and resolved == b"noresolve", r.stdout


def test_one_routed_link_and_no_ipv6(node, sandbox):
    r = node.exec(sandbox.id, ["cat", "/proc/net/dev"])
    ifaces = sorted(line.split(":")[0].strip() for line in r.stdout.decode().splitlines()[2:])
    assert ifaces == ["eth0", "lo"]
    r = node.exec(sandbox.id, ["cat", "/proc/net/route"])
    routes = r.stdout.decode().strip().splitlines()[1:]
    assert [line.split()[0] for line in routes] == ["eth0", "eth0"]  # the /31 and the default route
    if node.isolation == "gvisor":  # its netstack has no IPv6 here: no /proc/sys/net/ipv6 at all
        r = node.sh(sandbox.id, "cat /proc/net/if_inet6; test -e /proc/sys/net/ipv6 || echo 1")
    else:
        r = node.sh(sandbox.id, "cat /proc/net/if_inet6; cat /proc/sys/net/ipv6/conf/all/disable_ipv6")
    assert r.stdout.strip() == b"1", r.stdout  # no IPv6 address anywhere, and IPv6 off


@pytest.mark.parametrize(("family", "kind", "proto"), [
    ("AF_INET", "SOCK_RAW", 1),  # ICMP
    ("AF_INET", "SOCK_RAW", 255),  # IPPROTO_RAW
    ("AF_INET6", "SOCK_RAW", 58),
    ("AF_PACKET", "SOCK_RAW", 0x0300),  # ETH_P_ALL, big-endian
    ("AF_PACKET", "SOCK_DGRAM", 0x0300),
])  # fmt: skip
def test_raw_sockets_are_refused(node, sandbox, family, kind, proto):
    r = node.exec(sandbox.id, ["python3", "-c", f"""
import socket, errno
try:
    socket.socket(socket.{family}, socket.{kind}, {proto})
    print("opened")
except OSError as e:
    print(errno.errorcode[e.errno])
"""])
    assert r.stdout.strip() in (b"EPERM", b"EACCES"), r.stdout


def test_network_admin_is_refused(node, sandbox):
    r = node.sh(sandbox.id, "ip link add dummy0 type dummy 2>&1; echo rc=$?; "
                            "ip addr add 10.9.9.9/24 dev lo 2>&1; echo rc=$?; "
                            "ip route add default dev lo 2>&1; echo rc=$?")  # fmt: skip
    assert r.stdout.count(b"rc=0") == 0 and r.stdout.count(b"rc=") == 3, r.stdout


def _host_listener(family: int = socket.AF_INET, addr: str = "127.0.0.1") -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((addr, 0))
    srv.listen(16)
    srv.setblocking(False)
    return srv


def test_host_loopback_services_are_unreachable(node, sandbox):
    v4 = _host_listener()
    v6 = _host_listener(socket.AF_INET6, "::1")
    try:
        p4, p6 = v4.getsockname()[1], v6.getsockname()[1]
        # the listener works from the host (so "refused" below means isolation)
        socket.create_connection(("127.0.0.1", p4), timeout=2).close()
        v4.accept()[0].close()
        results = connect_from(node, sandbox.id, [("127.0.0.1", p4, "AF_INET"),
                                                  ("::1", p6, "AF_INET6")])
        assert results[f"127.0.0.1:{p4}"][0] == "ECONNREFUSED"
        assert results[f"::1:{p6}"][0] in ("ECONNREFUSED", "EADDRNOTAVAIL")  # IPv6 is off inside
        for srv in (v4, v6):
            with pytest.raises(BlockingIOError):
                srv.accept()
    finally:
        v4.close()
        v6.close()


def test_host_abstract_unix_sockets_are_unreachable(node, sandbox):
    """Abstract unix sockets are scoped by network namespace (cf. CVE-2020-15257)."""
    name = f"cloche-test-{secrets.token_hex(6)}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(4)
    srv.setblocking(False)
    try:
        r = node.exec(sandbox.id, ["python3", "-c", f"""
import socket, errno
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("\\0{name}")
    print("connected")
except OSError as e:
    print(errno.errorcode[e.errno])
"""])
        assert r.stdout.strip() == b"ECONNREFUSED", r.stdout
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


SERVE = r"""
import socket, os, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
with open("/tmp/port.tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename("/tmp/port.tmp", "/tmp/port")
s.settimeout(30)
while True:
    c, _ = s.accept()
    c.sendall(b"hello")
    c.close()
"""


def test_sandboxes_cannot_reach_each_others_loopback(node, sandbox, other):
    node.exec(sandbox.id, ["sh", "-c", 'rm -f /tmp/port; setsid python3 -c "$1" >/dev/null 2>&1 '
                                       '</dev/null &', "-", SERVE])  # fmt: skip
    try:
        port = None
        deadline = time.time() + 10
        while port is None and time.time() < deadline:
            r = node.exec(sandbox.id, ["cat", "/tmp/port"])
            port = int(r.stdout) if r.exit_code == 0 else None
            time.sleep(0.02)
        assert port, "the in-sandbox server never started"
        # it is reachable from its own sandbox ...
        mine = connect_from(node, sandbox.id, [("127.0.0.1", port, "AF_INET")])
        assert mine[f"127.0.0.1:{port}"][0] == "connected"
        # ... but not from a neighbour, nor from the host's loopback
        theirs = connect_from(node, other.id, [("127.0.0.1", port, "AF_INET")])
        assert theirs[f"127.0.0.1:{port}"][0] == "ECONNREFUSED"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                c.settimeout(1)
                got = c.recv(5)
        except OSError:
            got = b""  # refused: nothing on that port on the host
        assert got != b"hello"
    finally:
        node.sh(sandbox.id, "pkill -f '[s]ocket.SOCK_STREAM' ; rm -f /tmp/port")
