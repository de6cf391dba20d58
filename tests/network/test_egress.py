"""Egress policy end to end: a real server, real sandboxes, the node's nftables table
and resolver, and the suite's fake internet (198.51.100.0/24 behind the uplink).

Each test creates its sandboxes with the policy under test and probes from inside.
Nothing here targets an address outside the namespaces the suite built; the session's
egress guard fails the run if any packet left through a real interface.
"""

from __future__ import annotations

import json
import time

from tests.network.conftest import create, exec_sh, probe

FAST = 1.0  # a denied connection is answered (reset or ICMP), never left to time out


def refused(result: tuple[object, float]) -> bool:
    outcome, elapsed = result
    return outcome in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH") and elapsed < FAST


def test_allowed_host_by_ip_and_by_name(client, internet):
    sid = create(client, {"allow_out": [internet.hosts["allowed"], "allowed.test", "*.wild.test"]})
    by_ip, by_name, wild, resolved = probe(client, sid, ["http", internet.hosts["allowed"]], ["http", "allowed.test"],
                                           ["http", "a.b.wild.test"], ["resolve", "alias.test"])  # fmt: skip
    assert by_ip[0]["host"] == internet.hosts["allowed"]
    assert by_name[0]["host"] == internet.hosts["allowed"]
    assert by_name[0]["client"] == internet.uplink_address  # masqueraded at the node's uplink
    assert wild[0]["host"] == internet.hosts["wild"]
    # with address rules in the allow list every name resolves, and the address decides
    assert resolved[0] == [internet.hosts["allowed"]], resolved


def test_denied_host_and_name_fail_fast(client, internet):
    sid = create(client, {"allow_out": ["allowed.test"]})
    ip, other_ip, name, ok = probe(client, sid, ["connect", internet.hosts["denied"], 80],
                                   ["connect", internet.hosts["allowed"], 7],  # the name allows all its ports
                                   ["resolve", "denied.test"], ["resolve", "allowed.test"])  # fmt: skip
    assert refused(ip), ip
    # the allowed name was not resolved yet, so its address is still closed
    assert refused(other_ip), other_ip
    assert isinstance(name[0], str) and name[1] < FAST, name  # REFUSED: getaddrinfo fails at once
    assert ok[0] == [internet.hosts["allowed"]]
    (after,) = probe(client, sid, ["connect", internet.hosts["allowed"], 7])
    assert after[0] == "connected"  # learned from the answer, for its TTL


def test_deny_list_blocks_by_address_and_name(client, internet):
    sid = create(client, {"deny_out": [f"{internet.hosts['denied']}/32", "denied.test", "other.test:80"]})
    denied, name, other_80, other_7, allowed = probe(
        client, sid, ["connect", internet.hosts["denied"], 80], ["resolve", "denied.test"],
        ["connect", internet.hosts["other"], 80], ["connect", internet.hosts["other"], 7],
        ["connect", internet.hosts["allowed"], 80])  # fmt: skip
    assert refused(denied), denied
    assert isinstance(name[0], str), name
    assert other_80[0] == "connected"  # a host rule by name denies the name, not its address
    assert other_7[0] == "connected" and allowed[0] == "connected"


def test_always_denied_even_when_everything_is_allowed(client, server, internet):
    neighbour = create(client, "internet")
    sid = create(client, {"allow_out": ["0.0.0.0/0"]})
    me = client.get(f"/v1/sandboxes/{sid}").json()["network"]
    them = client.get(f"/v1/sandboxes/{neighbour}").json()["network"]["address"]
    gateway = json.loads(exec_sh(client, sid, "ip -j route show default")["stdout"])[0]["gateway"]
    results = probe(client, sid, ["connect", "169.254.169.254", 80], ["connect", "169.254.0.1", 80],
                    ["connect", gateway, server.port], ["connect", internet.uplink_address, server.port],
                    ["connect", internet.uplink_address, 22], ["connect", them, 80], ["connect", "10.1.2.3", 80],
                    ["connect", "192.168.1.1", 80], ["connect", "172.16.0.1", 80],
                    ["connect", internet.hosts["allowed"], 80])  # fmt: skip
    *blocked, allowed = results
    assert all(refused(r) for r in blocked), list(zip(["metadata", "link-local", "control plane via gateway",
                                                       "control plane via uplink", "node", "neighbour", "10/8",
                                                       "192.168/16", "172.16/12"], blocked, strict=True))
    assert allowed[0] == "connected"
    after = client.get(f"/v1/sandboxes/{sid}").json()["network"]["counters"]
    assert after["denied_connections"] >= len(blocked) and after["bytes_out"] > 0
    assert me["address"] != them


def test_spoofed_source_and_in_sandbox_changes_bypass_nothing(client, internet):
    neighbour = create(client, "internet")
    them = client.get(f"/v1/sandboxes/{neighbour}").json()["network"]["address"]
    sid = create(client, "none")
    script = r"""
import errno, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind an address that is not ours
s.settimeout(2)
try:
    s.bind((sys.argv[1], 0))
    s.connect((sys.argv[2], 7))
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"""
    out = exec_sh(client, sid, ["python3", "-c", script, them, internet.hosts["allowed"]])
    assert out["stdout"].strip() != "connected", out
    changes = exec_sh(client, sid, "ip addr add 100.64.77.1/32 dev eth0; echo rc=$?; ip route add 0/0 dev lo; "
                                   "echo rc=$?; ip link set eth0 down; echo rc=$?")  # fmt: skip
    assert changes["stdout"].count("rc=0") == 0, changes
    (still,) = probe(client, sid, ["connect", internet.hosts["allowed"], 80])
    assert refused(still), still


def test_live_policy_change_cuts_open_connections(client, internet):
    sid = create(client, "internet")
    script = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7), timeout=5)
s.sendall(b"ping"); assert s.recv(4) == b"ping"
open("/tmp/ready", "w").close()
while True:
    time.sleep(0.2)
    try:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            print("closed"); break
    except OSError as e:
        print("cut", e.errno); break
"""
    assert client.put(f"/v1/sandboxes/{sid}/files?path=/tmp/keep.py", content=script.encode()).status_code < 300
    exec_sh(client, sid, f"setsid python3 /tmp/keep.py {internet.hosts['allowed']} > /tmp/out 2>&1 < /dev/null &")
    deadline = time.time() + 10
    while exec_sh(client, sid, "test -e /tmp/ready")["exit_code"] != 0:
        assert time.time() < deadline, exec_sh(client, sid, "cat /tmp/out")
        time.sleep(0.1)
    r = client.put(f"/v1/sandboxes/{sid}/network", json={"deny_out": [internet.hosts["allowed"]]})
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["deny_out"] == [f"{internet.hosts['allowed']}/32"]
    deadline = time.time() + 5
    while not exec_sh(client, sid, "cat /tmp/out")["stdout"].strip():
        assert time.time() < deadline, "the open connection survived a policy that denies it"
        time.sleep(0.1)
    assert exec_sh(client, sid, "cat /tmp/out")["stdout"].startswith(("cut", "closed"))


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(client):
    sid = create(client, {"allow_out": ["allowed.test"]})
    before = client.get(f"/v1/sandboxes/{sid}/network").json()["policy"]
    cases = [
        ({"allow_out": ["198.51.100.0/33"]}, "network.allow_out[0]"),
        ({"allow_out": ["https://example.com"]}, "network.allow_out[0]"),
        ({"deny_out": ["example.com:70000"]}, "network.deny_out[0]"),
        ({"allow_out": [{"to": "example.com", "ports": "9-1"}]}, "network.allow_out[0]"),
        ({"allow_out": ["a..b"]}, "network.allow_out[0]"),
        ({"allow_out": [f"198.51.100.{i % 250}" for i in range(300)]}, "allow_out"),
        ({"dns_servers": ["not-an-ip"]}, "network.dns_servers"),
    ]
    for body, field in cases:
        r = client.put(f"/v1/sandboxes/{sid}/network", json=body)
        assert r.status_code in (400, 422), (body, r.text)
        assert field in r.json()["error"]["message"], (field, r.text)
        r = client.post("/v1/sandboxes", json={"network": body})
        assert r.status_code in (400, 422), (body, r.text)
    assert client.get(f"/v1/sandboxes/{sid}/network").json()["policy"] == before


def test_policy_survives_pause_hibernate_wake_and_fork(client, internet):
    sid = create(client, {"allow_out": [internet.hosts["allowed"]]})
    for action in ("pause", "resume", "hibernate"):
        assert client.post(f"/v1/sandboxes/{sid}/{action}").status_code == 200
    allowed, denied = probe(client, sid, ["connect", internet.hosts["allowed"], 80],
                            ["connect", internet.hosts["other"], 80])  # fmt: skip (exec wakes it)
    assert allowed[0] == "connected" and refused(denied)
    child = client.post(f"/v1/sandboxes/{sid}/fork", json={}).json()["id"]
    assert client.get(f"/v1/sandboxes/{child}/network").json()["policy"]["allow_out"] == [
        f"{internet.hosts['allowed']}/32"]
    allowed, denied = probe(client, child, ["connect", internet.hosts["allowed"], 80],
                            ["connect", internet.hosts["other"], 80])  # fmt: skip
    assert allowed[0] == "connected" and refused(denied)


def test_connection_cap(client, internet):
    sid = create(client, {"max_connections": 4})
    script = r"""
import socket, sys
held, out = [], []
for i in range(6):
    try:
        held.append(socket.create_connection((sys.argv[1], 7), timeout=3)); out.append("ok")
    except OSError as e:
        out.append(str(e.errno))
print(" ".join(out))
"""
    out = exec_sh(client, sid, ["python3", "-c", script, internet.hosts["allowed"]])["stdout"].split()
    assert out[:4] == ["ok"] * 4 and "ok" not in out[4:], out


def test_dns_rate_limit(client):
    sid = create(client, "internet")
    script = r"""
import socket
ok = bad = 0
for i in range(120):
    try:
        socket.getaddrinfo(f"n{i}.wild.test", 80, socket.AF_INET); ok += 1
    except OSError:
        bad += 1
print(ok, bad)
"""
    ok, bad = map(int, exec_sh(client, sid, ["python3", "-c", script])["stdout"].split())
    counters = client.get(f"/v1/sandboxes/{sid}").json()["network"]["counters"]
    assert bad > 0 and counters["dns_rate_limited"] > 0, (ok, bad, counters)
    assert ok >= 20  # the burst is answered


def test_bandwidth_caps(client, internet):
    sid = create(client, {"egress_mbps": 8, "ingress_mbps": 8})
    script = r"""
import socket, sys, time
host = sys.argv[1]
s = socket.create_connection((host, 9), timeout=10)
chunk, sent, t = b"x" * 65536, 0, time.monotonic()
while time.monotonic() - t < 2:
    s.sendall(chunk); sent += len(chunk)
s.shutdown(socket.SHUT_WR); got = int(s.makefile().readline()); up = got * 8 / (time.monotonic() - t) / 1e6
s = socket.create_connection((host, 19), timeout=10)
n, t = 0, time.monotonic()
while time.monotonic() - t < 2:
    n += len(s.recv(65536))
down = n * 8 / (time.monotonic() - t) / 1e6
print(round(up, 2), round(down, 2))
"""
    up, down = map(float, exec_sh(client, sid, ["python3", "-c", script, internet.hosts["allowed"]])["stdout"].split())
    assert 0.5 < up <= 8 * 1.25, up
    assert 0.5 < down <= 8 * 1.25, down


def test_metrics_carry_the_counters(client, server, internet):
    sid = create(client, "internet")
    probe(client, sid, ["http", internet.hosts["allowed"]], ["connect", "169.254.169.254", 80])
    text = client.get("/metrics").text
    lines = [line for line in text.splitlines() if sid in line]
    assert any(line.startswith("cloche_sandbox_network_bytes_total") and 'direction="out"' in line
               and float(line.split()[-1]) > 0 for line in lines), lines  # fmt: skip
    assert any(line.startswith("cloche_sandbox_network_denied_total") and float(line.split()[-1]) >= 1
               for line in lines), lines  # fmt: skip


def test_none_has_no_egress_and_no_dns(client, internet):
    sid = create(client, "none")
    ip, name = probe(client, sid, ["connect", internet.hosts["allowed"], 80], ["resolve", "allowed.test"])
    assert refused(ip) and isinstance(name[0], str)
