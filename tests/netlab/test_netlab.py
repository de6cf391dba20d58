"""Self-test of the fake-internet harness, before any sandbox-networking test relies on it.

A namespace ``clt-sb-<pid>`` stands in for a sandbox: it sits behind a /31 veth on the host, the host forwards
and masquerades its traffic out of the uplink, exactly what cloche's networking will do. From inside it we
reach the fake internet's HTTP, TCP and DNS servers; the EgressGuard on the real interfaces must count nothing,
and once everything is closed no ``clt`` object may remain.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.netlab import (
    BADCERT_ADDRESS,
    DNS_ADDRESS,
    INTERNET_HOSTS,
    SECURE_ADDRESS,
    SOCKS_ADDRESS,
    SOCKS_PASSWORD,
    SOCKS_USER,
    UPLINK_ADDRESS,
    EgressGuard,
    FakeInternet,
    leftover_network_objects,
    netns_run,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)")

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SANDBOX_HOST_SIDE = "100.64.255.0"
SANDBOX_ADDRESS = "100.64.255.1"


class Lab:
    """Guard + fake internet + a stand-in sandbox namespace with forwarding and masquerading. close() undoes
    whatever start() got done, in reverse order, even after a partial start."""

    def __init__(self, inet: FakeInternet) -> None:
        pid = os.getpid()
        self.guard = EgressGuard()
        self.inet = inet  # the session's (tests/conftest.py): one fake internet per host at a time
        self.sandbox_ns = f"clt-sb-{pid}"
        self.sandbox_link = f"clt-sbh{pid % 100000}"
        self.nat_table = f"clt_nat_{pid}"
        self.saved_forward: str | None = None
        self._undo: list[tuple[str, ...]] = []

    def start(self) -> None:
        self.guard.start()  # first, so every interface made below is excluded from the real ones
        self.before = leftover_network_objects(("clt",))
        ns, link = self.sandbox_ns, self.sandbox_link
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self._undo.append(("ip", "netns", "del", ns))
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
        self._undo.append(("ip", "link", "del", link))
        for argv in (
            ["ip", "addr", "add", f"{SANDBOX_HOST_SIDE}/31", "dev", link],
            ["ip", "link", "set", link, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "addr", "add", f"{SANDBOX_ADDRESS}/31", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", SANDBOX_HOST_SIDE],
        ):
            subprocess.run(argv, check=True)
        self.saved_forward = IP_FORWARD.read_text().strip()
        IP_FORWARD.write_text("1")
        rules = (f"table ip {self.nat_table} {{\n chain post {{\n  type nat hook postrouting priority srcnat; "
                 f"policy accept;\n  ip saddr {SANDBOX_ADDRESS} oifname \"{self.inet.uplink}\" masquerade\n"
                 " }\n}\n")  # fmt: skip
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        self._undo.append(("nft", "delete", "table", "ip", self.nat_table))

    def close(self) -> None:
        errors = []
        while self._undo:
            argv = self._undo.pop()
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode:
                errors.append(f"{argv}: {proc.stderr.strip()}")
        if self.saved_forward is not None:
            IP_FORWARD.write_text(self.saved_forward)
            self.saved_forward = None
        self.guard.close()
        assert not errors, errors

    def sandbox(self, code: str, timeout: float = 10) -> Any:
        """Run Python inside the stand-in sandbox; it prints one JSON value, which is returned."""
        proc = netns_run(self.sandbox_ns, [sys.executable, "-c", textwrap.dedent(code)], timeout=timeout)
        return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lab(internet):
    lab = Lab(internet)
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def test_guard_watches_the_real_interfaces_only(lab):
    assert "eth0" in lab.guard.interfaces
    assert not [i for i in lab.guard.interfaces if i == "lo" or i.startswith("cl")]


def test_http_from_the_sandbox_reaches_the_host_it_asked_for(lab):
    got = lab.sandbox(f"""
        import http.client, json
        out = []
        for host in ("{INTERNET_HOSTS["allowed"]}", "{INTERNET_HOSTS["other"]}"):
            c = http.client.HTTPConnection(host, 80, timeout=5)
            c.request("GET", "/some/path?x=1")
            r = c.getresponse()
            out.append([r.status, json.loads(r.read())])
        print(json.dumps(out))
    """)
    (s1, allowed), (s2, other) = got
    assert (s1, s2) == (200, 200)
    assert allowed["host"] == "198.51.100.10" and other["host"] == "198.51.100.12"
    assert allowed["client"] == UPLINK_ADDRESS  # masqueraded out of the uplink
    assert allowed["path"] == "/some/path?x=1"


def test_http_bytes_sse_and_echo(lab):
    got = lab.sandbox("""
        import http.client, json, time
        c = http.client.HTTPConnection("198.51.100.10", 80, timeout=5)
        c.request("GET", "/bytes?n=3000000")
        r = c.getresponse()
        n = len(r.read())
        c.request("POST", "/echo", body=b"hello fake internet", headers={"Content-Type": "text/plain"})
        r = c.getresponse()
        echo = [r.getheader("Content-Type"), r.read().decode()]
        c.request("GET", "/sse?count=3&interval=0.1")
        r = c.getresponse()
        t0, events, buf = time.monotonic(), [], b""
        while chunk := r.read1(65536):
            buf += chunk
            while b"\\n\\n" in buf:
                event, buf = buf.split(b"\\n\\n", 1)
                events.append([round(time.monotonic() - t0, 2), event.decode()])
        print(json.dumps({"n": n, "echo": echo, "ctype": r.getheader("Content-Type"), "events": events}))
    """)
    assert got["n"] == 3_000_000
    assert got["echo"] == ["text/plain", "hello fake internet"]
    assert got["ctype"] == "text/event-stream"
    assert [e[1].splitlines()[0] for e in got["events"]] == ["id: 0", "id: 1", "id: 2"]
    assert got["events"][-1][0] >= 0.15  # streamed slowly, not all at once


def test_tcp_echo_sink_and_source(lab):
    got = lab.sandbox("""
        import json, socket
        out = {}
        with socket.create_connection(("198.51.100.10", 7), timeout=5) as s:
            for word in (b"one", b"two"):
                s.sendall(word)
                out.setdefault("echo", []).append(s.recv(100).decode())
        with socket.create_connection(("198.51.100.12", 9), timeout=5) as s:
            s.sendall(b"x" * 1_000_000)
            s.shutdown(socket.SHUT_WR)
            out["sink"] = s.makefile().read().strip()
        with socket.create_connection(("198.51.100.13", 19), timeout=5) as s:
            got = 0
            while got < 2_000_000:
                got += len(s.recv(1 << 20))
            out["source"] = got >= 2_000_000
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(b"ping", ("198.51.100.10", 7))
        out["udp"] = u.recv(100).decode()
        print(json.dumps(out))
    """)
    assert got == {"echo": ["one", "two"], "sink": "1000000", "source": True, "udp": "ping"}


def test_dns_answers_the_test_zone(lab):
    before = lab.inet.dns_count()
    got = lab.sandbox(f"""
        import json
        import dns.message, dns.query, dns.rcode, dns.rdatatype
        def ask(name, rdtype="A", tcp=False):
            q = dns.message.make_query(name, rdtype)
            r = (dns.query.tcp if tcp else dns.query.udp)(q, "{DNS_ADDRESS}", timeout=3)
            return {{"rcode": dns.rcode.to_text(r.rcode()),
                    "answer": [[rr.name.to_text(), rr.ttl, dns.rdatatype.to_text(rr.rdtype), [x.to_text() for x in rr]]
                               for rr in r.answer]}}
        print(json.dumps({{
            "allowed": ask("allowed.test"),
            "allowed_tcp": ask("allowed.test", tcp=True),
            "wild": ask("deep.sub.wild.test"),
            "alias": ask("alias.test"),
            "short": ask("short.test"),
            "aaaa": ask("allowed.test", "AAAA"),
            "missing": ask("missing.test"),
            "outside": ask("example.com"),
            "txt": ask("c2VjcmV0.tunnel.test", "TXT"),
        }}))
    """)
    assert got["allowed"] == {"rcode": "NOERROR", "answer": [["allowed.test.", 30, "A", ["198.51.100.10"]]]}
    assert got["allowed_tcp"] == got["allowed"]
    assert got["wild"]["answer"] == [["deep.sub.wild.test.", 30, "A", ["198.51.100.13"]]]
    assert got["alias"]["answer"] == [["alias.test.", 30, "CNAME", ["allowed.test."]],
                                      ["allowed.test.", 30, "A", ["198.51.100.10"]]]  # fmt: skip
    assert got["short"]["answer"] == [["short.test.", 2, "A", ["198.51.100.20"]]]
    assert got["aaaa"] == {"rcode": "NOERROR", "answer": []}
    assert got["missing"] == got["outside"] == {"rcode": "NXDOMAIN", "answer": []}
    assert got["txt"]["answer"] == [["c2VjcmV0.tunnel.test.", 30, "TXT", ['"c2VjcmV0"']]]
    # The log counts every query (another process on this host may ask too, so look for ours, not a total).
    mine = [q for q in lab.inet.dns_queries()[before:] if q["client"] == UPLINK_ADDRESS]
    asked = {(q["name"], q["type"], q["proto"]) for q in mine}
    assert {("allowed.test", "A", "udp"), ("allowed.test", "A", "tcp"), ("deep.sub.wild.test", "A", "udp"),
            ("c2vjcmv0.tunnel.test", "TXT", "udp"), ("missing.test", "A", "udp")} <= asked  # fmt: skip
    assert lab.inet.dns_count() >= before + 9


def test_guard_counts_what_it_watches(lab):
    """Positive control, without sending anything near a real interface: a second guard that watches the
    uplink instead (and does not drop) must count the sandbox's forwarded, masqueraded traffic."""
    with EgressGuard(interfaces=[lab.inet.uplink], drop=False) as watch:
        assert watch.packets() == {"egress": 0, "forward": 0}
        echoed = lab.sandbox("""
            import json, socket
            with socket.create_connection(("198.51.100.10", 7), timeout=5) as s:
                s.sendall(b"x")
                print(json.dumps(s.recv(10).decode()))
        """)
        assert echoed == "x"
        counts = watch.packets()
        assert counts["egress"] >= 3 and counts["forward"] >= 3, counts
        with pytest.raises(AssertionError, match="escaped"):
            watch.assert_clean()
    assert not any(t.endswith(watch.table) for t in leftover_network_objects(("clt",))["nft_tables"])
    with EgressGuard(interfaces=[lab.inet.uplink]) as block:  # drop=True: a counted packet never leaves
        outcome = lab.sandbox("""
            import json, socket
            try:
                socket.create_connection(("198.51.100.10", 7), timeout=0.5)
                print(json.dumps("connected"))
            except OSError as e:
                print(json.dumps(type(e).__name__))
        """)
        assert outcome == "TimeoutError"
        assert block.packets()["egress"] >= 1


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_https_records_requests_and_never_echoes_their_values(lab):
    """secure.test: a certificate from the test CA, every request recorded in full for the harness, the answer
    holds header digests only; plain HTTP to the same address records the same way."""
    lab.inet.clear_recorded_requests()
    secret = "Bearer sk-netlab-0123456789"
    got = lab.sandbox(f"""
        import http.client, json, socket, ssl
        ctx = ssl.create_default_context(cafile="{lab.inet.ca_pem_path}")
        out = []
        for port in (443, 80):  # by address (no resolver here), the name in SNI and Host
            conn = http.client.HTTPConnection("{SECURE_ADDRESS}", port, timeout=5)
            raw = socket.create_connection(("{SECURE_ADDRESS}", port), timeout=5)
            conn.sock = ctx.wrap_socket(raw, server_hostname="secure.test") if port == 443 else raw
            conn.request("POST", "/v1/things?x=1", body=b"payload",
                         headers={{"Host": "secure.test", "Authorization": "{secret}", "X-Extra": "1"}})
            r = conn.getresponse()
            out.append([r.status, r.read().decode()])
        print(json.dumps(out))
    """)
    for status, body in got:
        assert status == 200
        assert secret not in body and "sk-netlab" not in body  # the value never flows back
        answer = json.loads(body)
        assert ["Authorization", sha256(secret)] in answer["headers"]
        assert answer["path"] == "/v1/things?x=1" and answer["method"] == "POST"
    assert [json.loads(b)["scheme"] for _, b in got] == ["https", "http"]
    seen = lab.inet.recorded_requests(host="secure")  # the harness's view: values in full
    expected = [("https", "secure.test", "POST", "/v1/things?x=1"), ("http", None, "POST", "/v1/things?x=1")]
    assert [(r["scheme"], r["sni"], r["method"], r["path"]) for r in seen] == expected
    for r in seen:
        assert ["Authorization", secret] in r["headers"] and ["Host", "secure.test"] in r["headers"]
        assert r["client"] == UPLINK_ADDRESS and r["body_sha256"] == sha256("payload") and r["body_bytes"] == 7
    lab.inet.clear_recorded_requests()
    assert lab.inet.recorded_requests() == []


def test_badcert_does_not_verify(lab):
    got = lab.sandbox(f"""
        import json, socket, ssl
        out = {{}}
        for name, cafile in (("badcert.test", "{lab.inet.ca_pem_path}"), ("badcert.test", None)):
            ctx = ssl.create_default_context(cafile=cafile)
            try:
                with socket.create_connection(("{BADCERT_ADDRESS}", 443), timeout=5) as raw:
                    ctx.wrap_socket(raw, server_hostname=name).close()
                out[str(cafile)] = "verified"
            except ssl.SSLCertVerificationError as e:
                out[str(cafile)] = e.verify_message
        ctx = ssl.create_default_context(cafile="{lab.inet.ca_pem_path}")
        with socket.create_connection(("{SECURE_ADDRESS}", 443), timeout=5) as raw:  # right CA, wrong name
            try:
                ctx.wrap_socket(raw, server_hostname="badcert.test").close()
                out["wrong name"] = "verified"
            except ssl.SSLCertVerificationError as e:
                out["wrong name"] = e.verify_message
        print(json.dumps(out))
    """)
    assert got[str(lab.inet.ca_pem_path)] == got["None"] == "unable to get local issuer certificate"
    assert "mismatch" in got["wrong name"]


SOCKS_CLIENT = r"""
    import json, socket, ssl, time
    from python_socks import ProxyType
    from python_socks.sync.v2 import Proxy

    def through(port, password, tls=False, dst=("198.51.100.10", 80)):
        ctx = ssl.create_default_context(cafile=CA) if tls else None
        try:
            stream = Proxy(ProxyType.SOCKS5, "{socks}", port, "{user}", password, rdns=False,
                           proxy_ssl=ctx).connect(*dst, timeout=5)
        except Exception as e:
            return type(e).__name__ + ": " + str(e)
        try:
            stream.write(b"GET /via-socks HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := stream.read():
                data += chunk
            return json.loads(data.split(b"\r\n\r\n", 1)[1])
        finally:
            stream.close()
"""


def socks_client(lab, body: str) -> str:
    head = textwrap.dedent(SOCKS_CLIENT).format(socks=SOCKS_ADDRESS, user=SOCKS_USER)
    return f"CA = {str(lab.inet.ca_pem_path)!r}\n{head}\n{textwrap.dedent(body)}"


def test_socks5_proxy_auth_tls_stop_and_start(lab):
    socks = lab.inet.socks
    socks.start()
    try:
        code = f"""
            print(json.dumps({{"plain": through({socks.port}, "{SOCKS_PASSWORD}"),
                              "tls": through({socks.tls_port}, "{SOCKS_PASSWORD}", tls=True),
                              "wrong": through({socks.port}, "not-the-password"),
                              "tls_wrong": through({socks.tls_port}, "not-the-password", tls=True)}}))
        """
        got = lab.sandbox(socks_client(lab, code))
        for key in ("plain", "tls"):
            assert got[key]["path"] == "/via-socks" and got[key]["host"] == INTERNET_HOSTS["allowed"]
            assert got[key]["client"] == SOCKS_ADDRESS  # it came out of the proxy, not straight from the sandbox
        assert "authentication failure" in got["wrong"] and "authentication failure" in got["tls_wrong"]

        socks.stop()
        assert not socks.running
        code = f"""
            print(json.dumps([through({socks.port}, "{SOCKS_PASSWORD}"),
                              through({socks.tls_port}, "{SOCKS_PASSWORD}", tls=True)]))
        """
        down = lab.sandbox(socks_client(lab, code))
        assert all(d.startswith("ProxyConnectionError") and "refused" in d.lower() for d in down), down
        socks.start()
        again = lab.sandbox(socks_client(lab, f'print(json.dumps(through({socks.port}, "{SOCKS_PASSWORD}")))'))
        assert again["client"] == SOCKS_ADDRESS
    finally:
        socks.stop()


def test_zz_nothing_escaped_and_nothing_is_left(lab):
    """Runs last in this module: the real interfaces saw none of it, and closing removes every object."""
    lab.guard.assert_clean()
    forward_before = lab.saved_forward
    lab.close()
    assert IP_FORWARD.read_text().strip() == forward_before
    after = leftover_network_objects(("clt",))
    guard_table = f"inet {lab.guard.table}"
    assert guard_table not in after["nft_tables"]
    lab.before["nft_tables"].remove(guard_table)
    assert after == lab.before  # only the session's fake internet remains
