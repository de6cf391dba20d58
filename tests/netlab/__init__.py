"""A fake internet for the sandbox-networking tests, and a guard proving nothing reached the real one.

Why: network policy (egress allowlists, DNS filtering, masquerading, rate limits, cutting live connections) can
only be tested against something to connect to, and the test hosts have no internet — and even where they do,
tests must never send packets to it. So this module builds a stand-in internet inside a network namespace
named ``clt-inet``, reachable from the host only through a veth "uplink" (``clt-uplink``), and serves
HTTP, TCP echo/discard/chargen and an authoritative DNS zone (``test.``) on documentation addresses
(RFC 5737: 198.51.100.0/24 for the hosts, 203.0.113.0/30 for the uplink link). Code under test routes sandbox
traffic to ``FakeInternet.uplink`` and masquerades it to ``FakeInternet.uplink_address``.

HTTPS and a SOCKS5 proxy, for the egress proxy's tests: ``secure.test`` (198.51.100.30:443, certificate from
the harness's test CA, whose PEM is at ``FakeInternet.ca_pem_path``) and ``badcert.test`` (198.51.100.31:443,
untrusted certificate) record every request in full (``FakeInternet.recorded_requests()``, fetched from a
control port on the uplink peer) and answer with header names and SHA-256 digests only, so a test can prove the
upstream saw an injected secret that never flowed back. ``FakeInternet.socks`` is a ``SocksProxy`` (Dante with
username/password auth on 198.51.100.80:1080, the same behind TLS on :1443), started on demand and stoppable.

``EgressGuard`` is the other half: an nftables table that counts (and by default drops) every packet that
leaves through one of the host's real interfaces while headed for a documentation range or coming from the
sandbox address pool, plus everything forwarded out of them. A test that ends with ``guard.assert_clean()``
proves the fake internet was the only one used. ``leftover_network_objects()`` lists namespaces, interfaces,
nft tables and tc qdiscs left behind, for the suite's leak check.

Typical use from a fixture::

    @pytest.fixture(scope="module")
    def internet():
        with EgressGuard() as guard, FakeInternet() as inet:
            yield inet
            guard.assert_clean()

Everything here needs root and shells out to ``ip``, ``nft`` and ``tc``; it touches only objects whose names
start with ``clt-`` / ``clt_`` and the host routes for 198.51.100.0/24 it adds itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .servers import (
    A_RECORDS,
    BADCERT_ADDRESS,
    CNAME_RECORDS,
    DEFAULT_TTL,
    DNS_ADDRESS,
    SECURE_ADDRESS,
    SOCKS_ADDRESS,
    TTLS,
    TXT_ECHO_PARENT,
    WILDCARD_RECORDS,
)
from .tls import TestPki

__all__ = [
    "A_RECORDS",
    "BADCERT_ADDRESS",
    "CNAME_RECORDS",
    "DEFAULT_TTL",
    "DNS_ADDRESS",
    "DOC_RANGES",
    "INTERNET_HOSTS",
    "SECURE_ADDRESS",
    "SOCKS_ADDRESS",
    "SOCKS_PASSWORD",
    "SOCKS_USER",
    "TTLS",
    "TXT_ECHO_PARENT",
    "UPLINK_ADDRESS",
    "UPLINK_PEER",
    "WILDCARD_RECORDS",
    "EgressGuard",
    "FakeInternet",
    "SocksProxy",
    "TestPki",
    "leftover_network_objects",
    "netns_run",
    "reap_stale",
    "stop_servers",
]

SERVERS = Path(__file__).with_name("servers.py")
SOCKSD = Path(__file__).with_name("socksd.py")
NETNS_DIR = Path("/run/netns")

HOSTS_RANGE = "198.51.100.0/24"  # the "internet" hosts
# The uplink veth: a /30, not the whole /24, because this workplace's package registries
# answer on 203.0.113.80 and must stay reachable while a fake internet is up.
LINK_RANGE = "203.0.113.0/30"
DOC_RANGES: tuple[str, ...] = (HOSTS_RANGE, LINK_RANGE)
# One fake internet per host (they share addresses and the host route), shared by the test
# sessions that want it at the same time: each holds LOCK_PATH shared while it uses it (a
# session that needs the host to itself holds it exclusively), BUILD_LOCK_PATH guards
# building and tearing down, and STATE_PATH describes the one that runs.
LOCK_PATH = "/run/clt-fake-internet.lock"
BUILD_LOCK_PATH = "/run/clt-fake-internet.build.lock"
STATE_PATH = Path("/run/clt-fake-internet.json")  # {"pid": the servers' pid}
# Fixed names, so a session's environment (uplink, CA file) stays right for as long as
# one runs, and no reaper of dead sessions' objects takes it for one of theirs.
INTERNET_NETNS = "clt-inet"
INTERNET_UPLINK = "clt-uplink"
INTERNET_TLS_DIR = Path("/run/clt-fake-internet-tls")
UPLINK_ADDRESS = "203.0.113.1"  # host side of the uplink
UPLINK_PEER = "203.0.113.2"  # fake-internet side, the next hop for 198.51.100.0/24
INTERNET_HOSTS: dict[str, str] = {
    "allowed": A_RECORDS["allowed.test"],  # 198.51.100.10
    "denied": A_RECORDS["denied.test"],  # 198.51.100.11
    "other": A_RECORDS["other.test"],  # 198.51.100.12
    "wild": WILDCARD_RECORDS["wild.test"],  # 198.51.100.13
    "short": A_RECORDS["short.test"],  # 198.51.100.20
    "dns": DNS_ADDRESS,  # 198.51.100.53
    "secure": SECURE_ADDRESS,  # 198.51.100.30: HTTPS (test CA), records requests
    "badcert": BADCERT_ADDRESS,  # 198.51.100.31: HTTPS (untrusted certificate), records requests
    "socks": SOCKS_ADDRESS,  # 198.51.100.80: SOCKS5 (when FakeInternet.socks is started)
}
# The SOCKS5 proxy's one user (RFC 1929), known only inside the proxy's own mount namespace (see socksd.py).
SOCKS_USER = "cltsocks"
SOCKS_PASSWORD = "socks-pw-7f3a"
_SOCKS_PASSWORD_HASH = (  # openssl passwd -6 -salt clochetestsalt "$SOCKS_PASSWORD"
    "$6$clochetestsalt$mUb0Hjp8CBN0ylKYrDSVFTsA8xID3fY58qwpFYsOthjjqgn0fR8TlxuiQDJjULAH.ZIrpLViUReLFZ15doTs9."
)

_guard_instances = itertools.count()


def _run(*argv: str, check: bool = True, input: str | None = None, timeout: float = 10) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _quiet(*argv: str) -> None:
    subprocess.run(argv, capture_output=True, timeout=10)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it only waits for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _links(netns: str | None = None) -> list[dict[str, Any]]:
    argv = ["ip", "-j", "link", "show"] if netns is None else ["ip", "-n", netns, "-j", "link", "show"]
    return json.loads(_run(*argv) or "[]")


def netns_run(netns: str, argv: Sequence[str], *, timeout: float = 15, input: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run argv inside a named network namespace; raise with its output when it fails and check is set."""
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, input=input,
                          timeout=timeout)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"in {netns}: {list(argv)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")  # fmt: skip
    return proc


def reap_stale() -> list[str]:
    """Remove harness objects (``clt-<kind>-<pid>`` namespaces, ``clt_<kind>_<pid>`` nft tables) whose creating
    process is dead — the remains of a run that was killed before it could clean up. Returns what it removed."""
    removed = []
    if NETNS_DIR.is_dir():
        for entry in NETNS_DIR.iterdir():
            m = re.fullmatch(r"clt-[a-z]+-(\d+)(?:-\d+)?", entry.name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(Exception):
                    for link in _links(entry.name):  # deleting a veth end here removes its host peer too, now
                        if link.get("link_type") != "loopback":
                            _quiet("ip", "-n", entry.name, "link", "del", link["ifname"])
                _quiet("ip", "netns", "del", entry.name)
                removed.append(f"netns {entry.name}")
    for family, name in _nft_tables():
        m = re.fullmatch(r"clt_[a-z]+_(\d+)(?:_\d+)?", name)
        if m and not _pid_alive(int(m.group(1))):
            _quiet("nft", "delete", "table", family, name)
            removed.append(f"nft {family} {name}")
    return removed


def _nft_tables() -> list[tuple[str, str]]:
    out = json.loads(_run("nft", "-j", "list", "tables") or "{}")
    return [(o["table"]["family"], o["table"]["name"]) for o in out.get("nftables", []) if "table" in o]


def stop_servers(proc: subprocess.Popen[str], timeout: float = 3) -> None:
    """End a server process started with pipes: close its stdin (it exits on EOF), then
    terminate, then kill."""
    with contextlib.suppress(Exception):
        assert proc.stdin is not None
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout: float, what: str, log: Any) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        line = proc.stdout.readline() if ready else ""
        if line.strip() == "ready":
            return
        if (ready and not line) or left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start: {log()}")


@contextlib.contextmanager
def _flocked(path: str) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _running_servers() -> int | None:
    """The pid of the fake internet's servers, if one runs."""
    try:
        pid = int(json.loads(STATE_PATH.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _pid_alive(pid) and (NETNS_DIR / INTERNET_NETNS).exists() else None


def _stop_pid(pid: int, timeout: float = 3) -> None:
    """SIGTERM, then SIGKILL, a process that need not be our child; wait until it is gone or a zombie."""
    for signo in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signo)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.02)
        if not _pid_alive(pid):
            return


def _dispose(server_pid: int | None) -> None:
    """Remove the fake internet: its servers, uplink (and with it the route), namespace, TLS files and state."""
    if server_pid is not None:
        _stop_pid(server_pid)
    _quiet("ip", "link", "del", INTERNET_UPLINK)  # takes the route and the peer with it, synchronously
    _quiet("ip", "netns", "del", INTERNET_NETNS)
    shutil.rmtree(INTERNET_TLS_DIR, ignore_errors=True)
    STATE_PATH.unlink(missing_ok=True)


class SocksProxy:
    """A real SOCKS5 proxy (Dante, see socksd.py) with RFC 1929 auth (``SOCKS_USER``/``SOCKS_PASSWORD``) on
    ``address:port``, and the same proxy behind TLS on ``address:tls_port`` with a certificate from ``pki``'s
    test CA for ``server_name`` and ``address``. It connects out from ``address``.

    ``netns`` None runs it in this network namespace (e.g. on 127.0.0.1 for unit tests); otherwise inside that
    namespace. ``start()`` and ``stop()`` may be called any number of times (a test stops the proxy to see
    egress fail closed, then starts it again on the same ports). Needs root (mount namespace) and ``danted``.
    """

    user: str = SOCKS_USER
    password: str = SOCKS_PASSWORD

    def __init__(self, pki: TestPki, address: str = SOCKS_ADDRESS, port: int = 1080, tls_port: int = 1443, *,
                 netns: str | None = None, server_name: str = "socks.test",
                 ready_timeout: float = 15) -> None:  # fmt: skip
        self.pki = pki
        self.address = address
        self.port = port
        self.tls_port = tls_port
        self.netns = netns
        self.server_name = server_name
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._workdir: Path | None = None
        self._cert: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ca_pem(self) -> str:
        """PEM of the CA that issued the TLS port's certificate."""
        return self.pki.ca_pem

    def start(self) -> SocksProxy:
        if self.running:
            return self
        self.stop()
        if self._cert is None:
            self._cert = self.pki.issue(self.server_name, self.address)
        self._workdir = Path(tempfile.mkdtemp(prefix="clt-socks-"))
        self._stderr = tempfile.TemporaryFile("w+")
        argv = [*(["ip", "netns", "exec", self.netns] if self.netns else []), "unshare", "-m", "--propagation",
                "private", sys.executable, str(SOCKSD), "--listen", f"{self.address}:{self.port}", "--external",
                self.address, "--tls-listen", f"{self.address}:{self.tls_port}", "--tls-cert", str(self._cert),
                "--user", self.user, "--password-hash", _SOCKS_PASSWORD_HASH,
                "--workdir", str(self._workdir)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True)  # fmt: skip
        try:
            _wait_ready(self.proc, self.ready_timeout, "the SOCKS5 proxy", self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        """What Dante and the wrapper wrote on stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self) -> None:
        """Stop the proxy (Dante and the TLS front): connections through it are cut, new ones refused."""
        if self.proc is not None:
            stop_servers(self.proc)
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> SocksProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def egress_proxy(self, *, tls: bool = False, host: str | None = None, username: str | None = SOCKS_USER,
                     password: str | None = SOCKS_PASSWORD, ca_cert: str | None = None) -> Any:  # fmt: skip
        """A ``cloche.node.net.policy.EgressProxy`` for this proxy (TLS: ``ca_cert`` defaults to the test CA,
        ``server_name`` to ``server_name`` when host is the address)."""
        from cloche.node.net.rules import EgressProxy

        host = host or self.address
        if not tls:
            return EgressProxy(host=host, port=self.port, username=username, password=password)
        return EgressProxy(host=host, port=self.tls_port, username=username, password=password, tls=True,
                           server_name=self.server_name if host == self.address else None,
                           ca_cert=ca_cert if ca_cert is not None else self.ca_pem)  # fmt: skip


class FakeInternet:
    """The fake internet: a namespace with servers on documentation addresses, reachable over a veth uplink.

    Layout::

        host                                        netns clt-inet
        clt-uplink 203.0.113.1/30  <── veth ──>  eth0 203.0.113.2/30
        route 198.51.100.0/24 via 203.0.113.2       lo: 198.51.100.{10,11,12,13,20,53}/32

    The namespace has no default route: it replies only to 203.0.113.0/30, so sandbox traffic must be
    masqueraded to ``uplink_address`` to get answers. Servers (see servers.py) listen on every host address:
    HTTP on ``http_port``, TCP+UDP echo on ``echo_port``, discard on ``discard_port``, chargen on
    ``chargen_port``; the DNS server (authoritative for ``test.``) on ``dns``:``dns_port``, UDP and TCP.
    HTTPS on ``https_port`` at ``secure.test``/``badcert.test`` (see servers.py), their recorded requests via
    ``recorded_requests()`` (the control server on ``uplink_peer``:``control_port``), the test CA at
    ``ca_pem_path`` (``ca_pem`` for its text). ``socks`` is a ``SocksProxy`` in the namespace on 198.51.100.80,
    not started: a test calls ``inet.socks.start()`` (idempotent); ``close()`` stops it.
    """

    uplink_address: str = UPLINK_ADDRESS
    uplink_peer: str = UPLINK_PEER
    hosts_range: str = HOSTS_RANGE
    link_range: str = LINK_RANGE
    hosts: dict[str, str] = INTERNET_HOSTS
    dns: str = DNS_ADDRESS
    dns_port: int = 53
    http_port: int = 80
    echo_port: int = 7
    discard_port: int = 9  # "sink": upload tests
    chargen_port: int = 19  # "source": download tests
    sink_port: int = discard_port
    source_port: int = chargen_port
    https_port: int = 443
    control_port: int = 8080

    def __init__(self, ready_timeout: float = 10, *, shared: bool = False) -> None:
        self.shared = shared
        self.server_pid: int | None = None
        self.netns: str = INTERNET_NETNS
        self.uplink: str = INTERNET_UPLINK
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._use: IO[str] | None = None
        self._started = False
        self.tls_dir: Path | None = None
        self.pki: TestPki | None = None
        self.socks: SocksProxy | None = None

    # -- lifecycle --

    def __enter__(self) -> FakeInternet:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def start(self) -> FakeInternet:
        """Use the running fake internet (``shared``) or build one: the namespace, the uplink and the host route,
        then the servers, ready. A session that is not ``shared`` waits until no other uses one and has its own."""
        if self._started:
            return self
        self._use = open(LOCK_PATH, "w")  # held until close
        fcntl.flock(self._use, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        with _flocked(BUILD_LOCK_PATH):
            self._started = True
            try:
                running = _running_servers()
                if running is not None and self.shared:
                    self.server_pid, self.tls_dir = running, INTERNET_TLS_DIR
                    return self
                _dispose(running)  # what sessions that all died left, if anything: nobody else holds LOCK_PATH
                reap_stale()
                self._build()
                self._start_servers()
                STATE_PATH.write_text(json.dumps({"pid": self.server_pid}))
            except BaseException:
                self._started = False
                self._teardown()
                self._use.close()
                raise
        return self

    def _build(self) -> None:
        ns, up = self.netns, self.uplink
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", ns)
        with contextlib.suppress(OSError):  # keep IPv6 router solicitations etc. off the uplink
            Path(f"/proc/sys/net/ipv6/conf/{up}/disable_ipv6").write_text("1")
        _run("ip", "addr", "add", f"{self.uplink_address}/30", "dev", up)
        _run("ip", "link", "set", up, "up")
        script = [
            "link set lo up",
            "link set eth0 up",
            f"addr add {self.uplink_peer}/30 dev eth0",
            *(f"addr add {addr}/32 dev lo" for addr in sorted(set(self.hosts.values()))),
        ]
        _run("ip", "-n", ns, "-batch", "-", input="\n".join(script) + "\n")
        sysctls = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        netns_run(ns, ["sysctl", "-q", "-w", *sysctls], check=False)
        _run("ip", "route", "replace", self.hosts_range, "via", self.uplink_peer, "dev", up)

    def _start_servers(self) -> None:
        self.tls_dir = INTERNET_TLS_DIR
        self.tls_dir.mkdir(mode=0o700)
        self.pki = TestPki(self.tls_dir)
        self.pki.issue("secure.test")
        self.pki.issue_untrusted("badcert.test")
        self.socks = SocksProxy(self.pki, netns=self.netns)
        self._stderr = tempfile.TemporaryFile("w+")
        lifetime = ["--until-sigterm"] if self.shared else []  # outlives this session while another uses it
        argv = ["ip", "netns", "exec", self.netns, sys.executable, str(SERVERS), *lifetime,
                "--http-port", str(self.http_port),
                "--echo-port", str(self.echo_port), "--discard-port", str(self.discard_port), "--chargen-port",
                str(self.chargen_port), "--dns", f"{self.dns}:{self.dns_port}", "--https-port", str(self.https_port),
                "--tls-dir", str(self.tls_dir), "--control", f"{self.uplink_peer}:{self.control_port}"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True)  # fmt: skip
        self.server_pid = self.proc.pid
        _wait_ready(self.proc, self.ready_timeout, "fake internet servers", self.server_log)

    def server_log(self) -> str:
        """What the server process wrote on stderr so far (tracebacks, bind errors)."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def close(self) -> None:
        """Stop using the fake internet; the last session using it stops the servers and removes the uplink, the
        route and the namespace. Idempotent."""
        if not self._started:
            return
        self._started = False
        assert self._use is not None
        with _flocked(BUILD_LOCK_PATH):
            try:  # the last user? (no other session holds LOCK_PATH)
                fcntl.flock(self._use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last:
                self._teardown()
            self._use.close()
            self._use = None

    def _teardown(self) -> None:
        if self.socks is not None:
            self.socks.stop()
        if self.server_pid is not None:
            _stop_pid(self.server_pid)
            self.server_pid = None
        if self.proc is not None:
            stop_servers(self.proc)
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        _dispose(None)
        self.tls_dir = None

    # -- helpers for tests --

    def url(self, host: str = "allowed", path: str = "/") -> str:
        """``http://<address>:<port><path>``; host is a key of ``hosts`` or an address."""
        addr = self.hosts.get(host, host)
        return f"http://{addr}{'' if self.http_port == 80 else f':{self.http_port}'}{path}"

    def http_get(self, path: str = "/", host: str = "allowed", timeout: float = 5) -> Any:
        """GET from the host side (through the uplink, no proxies) and decode the JSON answer."""
        conn = http.client.HTTPConnection(self.hosts.get(host, host), self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def dns_queries(self) -> list[dict[str, str]]:
        """Every query the fake DNS server received: ``{"name", "type", "proto", "client"}`` (name lowercased,
        no trailing dot). Tells a test whether a resolver under test contacted the upstream."""
        return self.http_get("/dns-count")["queries"]

    def dns_count(self) -> int:
        """How many DNS queries the fake DNS server has received so far."""
        return int(self.http_get("/dns-count")["count"])

    @property
    def ca_pem_path(self) -> Path:
        """The test CA's certificate (PEM file): the trust anchor for secure.test and the SOCKS5 proxy's TLS port;
        badcert.test's certificate does not chain to it. Valid while the fake internet runs."""
        assert self.tls_dir is not None, "the fake internet is not started"
        return self.tls_dir / "ca.pem"

    @property
    def ca_pem(self) -> str:
        return self.ca_pem_path.read_text()

    def _control(self, method: str, path: str, timeout: float = 5) -> Any:
        conn = http.client.HTTPConnection(self.uplink_peer, self.control_port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def recorded_requests(self, host: str | None = None) -> list[dict[str, Any]]:
        """Every request secure.test / badcert.test received (HTTP and HTTPS), oldest first, in full: ``{"seq",
        "scheme", "host", "port", "sni", "client", "method", "path", "version", "headers": [[name, value], ...],
        "body_bytes", "body_sha256"}``. ``host`` (a key of ``hosts`` or an address) keeps only that address's."""
        out = self._control("GET", "/requests")["requests"]
        if host is not None:
            addr = self.hosts.get(host, host)
            out = [r for r in out if r["host"] == addr]
        return out

    def clear_recorded_requests(self) -> None:
        self._control("POST", "/requests/clear")

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside the fake internet's namespace (see ``netns_run``)."""
        return netns_run(self.netns, argv, **kw)


class EgressGuard:
    """Counts (and by default drops) packets escaping through the host's real interfaces.

    Installs ``table inet clt_guard_<pid>`` with:

    * ``postrouting`` (filter, priority 300, policy accept): a packet out of a real interface whose destination
      is in ``destinations`` (the documentation ranges) or whose conntrack original source is in ``pool``
      increments counter ``egress`` (each packet once) and, with ``drop``, is dropped so it never hits the wire;
    * ``forward`` (filter, priority 300, policy accept): every forwarded packet out of a real interface
      increments counter ``forward`` (never dropped: it may not be ours).

    Real interfaces are every non-loopback interface of the host namespace present at ``start()`` whose name
    does not start with one of ``exclude_prefixes`` (the harness's ``clt-`` and cloche's ``cl…`` devices), unless
    ``interfaces`` names them explicitly. Start the guard before the code under test creates its interfaces.
    """

    def __init__(self, pool: str = "100.64.0.0/16", *, destinations: Iterable[str] = (*DOC_RANGES, "2001:db8::/32"),
                 interfaces: Iterable[str] | None = None, exclude_prefixes: Sequence[str] = ("cl",),
                 drop: bool = True) -> None:  # fmt: skip
        k = next(_guard_instances)
        self.table: str = f"clt_guard_{os.getpid()}" + (f"_{k}" if k else "")
        self.pool: str = str(ipaddress.ip_network(pool))
        self.destinations: tuple[str, ...] = tuple(str(ipaddress.ip_network(d)) for d in destinations)
        self.drop = drop
        self.exclude_prefixes = tuple(exclude_prefixes)
        self._explicit = None if interfaces is None else list(interfaces)
        self.interfaces: list[str] = []
        self._started = False

    def __enter__(self) -> EgressGuard:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    @staticmethod
    def real_interfaces(exclude_prefixes: Sequence[str] = ("cl",)) -> list[str]:
        """Non-loopback interfaces of the host namespace not named with one of exclude_prefixes."""
        return sorted(
            link["ifname"]
            for link in _links()
            if link.get("link_type") != "loopback"
            and "LOOPBACK" not in link.get("flags", [])
            and not link["ifname"].startswith(tuple(exclude_prefixes))
        )

    def start(self) -> EgressGuard:
        if self._started:
            return self
        reap_stale()
        self.interfaces = self._explicit if self._explicit is not None else self.real_interfaces(self.exclude_prefixes)
        v4 = [d for d in self.destinations if ipaddress.ip_network(d).version == 4]
        v6 = [d for d in self.destinations if ipaddress.ip_network(d).version == 6]
        pool_match = f"ct original {'ip' if ipaddress.ip_network(self.pool).version == 4 else 'ip6'} saddr {self.pool}"
        verdict = "drop" if self.drop else "return"
        t = f"inet {self.table}"
        elements = f"elements = {{ {', '.join(json.dumps(i) for i in self.interfaces)} }}" if self.interfaces else ""
        lines = [
            f"table {t} {{",
            f"  set real_ifs {{ type ifname; {elements} }}",
            "  counter egress { }",
            "  counter forward { }",
            "  chain escape {",
            *([f"    ip daddr {{ {', '.join(v4)} }} counter name egress {verdict}"] if v4 else []),
            *([f"    ip6 daddr {{ {', '.join(v6)} }} counter name egress {verdict}"] if v6 else []),
            f"    {pool_match} counter name egress {verdict}",
            "  }",
            "  chain postrouting {",
            "    type filter hook postrouting priority 300; policy accept;",
            "    oifname @real_ifs jump escape",
            "  }",
            "  chain forward {",
            "    type filter hook forward priority 300; policy accept;",
            "    oifname @real_ifs counter name forward",
            "  }",
            "}",
        ]
        _run("nft", "-f", "-", input="\n".join(lines) + "\n")
        self._started = True
        return self

    def packets(self) -> dict[str, int]:
        """``{"egress": n, "forward": n}``: packets counted so far (see the class docstring)."""
        out = json.loads(_run("nft", "-j", "list", "table", "inet", self.table))
        counts = {o["counter"]["name"]: int(o["counter"]["packets"]) for o in out["nftables"] if "counter" in o}
        return {"egress": counts.get("egress", 0), "forward": counts.get("forward", 0)}

    def assert_clean(self) -> None:
        """Raise AssertionError, with the counts, if any packet was counted."""
        counts = self.packets()
        if any(counts.values()):
            raise AssertionError(f"packets escaped through the real interfaces {self.interfaces}: {counts} "
                                 f"(egress: to {', '.join(self.destinations)} or from {self.pool}; "
                                 f"forward: any forwarded packet)")  # fmt: skip

    def close(self) -> None:
        """Delete the table. Idempotent."""
        if self._started:
            self._started = False
            _quiet("nft", "delete", "table", "inet", self.table)


def leftover_network_objects(prefixes: Sequence[str] = ("cl",)) -> dict[str, list[str]]:
    """Network objects whose names start with one of prefixes, for leak checks.

    Keys (always present): ``netns`` (names under /run/netns), ``interfaces`` (host namespace), ``nft_tables``
    (``"<family> <name>"``; a prefix also matches with ``-`` read as ``_``, so ``"cl"`` covers ``cloche…`` and
    ``clt_…``), ``qdiscs`` (``"<dev> <kind> <handle> <parent|root>"`` for qdiscs not created by the kernel —
    handle other than ``0:`` — on interfaces with those prefixes).
    """
    prefixes = tuple(prefixes)
    nft_prefixes = tuple({*prefixes, *(p.replace("-", "_") for p in prefixes)})
    netns = sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefixes)) if NETNS_DIR.is_dir() else []
    interfaces = sorted(link["ifname"] for link in _links() if link["ifname"].startswith(prefixes))
    tables = sorted(f"{family} {name}" for family, name in _nft_tables() if name.startswith(nft_prefixes))
    qdiscs = []
    for q in json.loads(_run("tc", "-j", "qdisc", "show") or "[]"):
        dev = q.get("dev", "")
        if dev.startswith(prefixes) and q.get("handle", "0:") != "0:":
            qdiscs.append(f"{dev} {q.get('kind')} {q.get('handle')} {'root' if q.get('root') else q.get('parent')}")
    return {"netns": netns, "interfaces": interfaces, "nft_tables": tables, "qdiscs": sorted(qdiscs)}
