"""Sandbox networking benchmarks: what the routed veth, the nftables table and the resolver cost.

Every figure is compared with a baseline measured in the same run: creates and claims on a
NodeRuntime with networking off (`network=None`), a TCP transfer between two plain network
namespaces joined by one veth, the filter with 10 sandboxes' policies loaded (vs 1,000).

Nothing leaves the host: the sandboxes' uplink is the test harness's fake internet
(tests/netlab: a namespace serving HTTP, echo, discard and DNS on documentation
addresses), and an EgressGuard on the host's real interfaces counts every packet headed
for a documentation range or coming from the sandbox pool; the run reports that count
(goal: 0). Only one fake internet can exist on a host (fixed addresses), so the module
first waits (up to BENCH_NET_WAIT_S) until no other one (the test suite's) is running.

`make bench` runs this module with the others. Alone, without touching the other sections
of BENCHMARKS.md (run.py rewrites the whole file from what it measured):

    BENCH_MODULES=network_bench BENCH_OUTPUT=bench/out/network_bench.md \\
        BENCH_JSON=bench/out/network_bench.json BENCH_PLOTS=bench/out/plots .venv/bin/python bench/run.py
    .venv/bin/python bench/network_bench.py --merge bench/out/network_bench.json

The second command renders this module's tables (with run.py's own renderer) into a marked
section of BENCHMARKS.md (`<!-- network_bench: begin -->`) before its plots; run.py keeps
that section whenever it rewrites the file, unless the run measured these tables itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # tests.netlab

from results import (  # noqa: E402
    OWN_NODE_KEYS,
    Goal,
    Result,
    env_float,
    env_int,
    failed,
    latency_results,
    log,
    note_conditions,
    percentile,
)

T_CREATE = "Networking: added cost on cold create and warm-pool claim"
T_TPUT = "Networking: TCP throughput and round trip, sandbox to the fake internet"
T_FILTER = "Networking: per-packet filter cost, 10 vs 1,000 sandboxes' policies loaded"
T_POLICY = "Networking: policy update latency"
T_INGRESS = "Networking: HTTP through the ingress proxy"
T_GUARD = "Networking: nothing left the host"
TABLES = (T_CREATE, T_TPUT, T_FILTER, T_POLICY, T_INGRESS, T_GUARD)

KNOBS = [
    ("BENCH_NET_WAIT_S", "600", "how long to wait for another fake internet (the test suite's) to go away"),
    ("BENCH_NET_CREATE_N", "30", "cold creates and warm claims per node (with and without networking)"),
    ("BENCH_NET_POOL_SIZE", "2", "warm pool of each node in the create/claim benchmark"),
    ("BENCH_NET_TPUT_S", "3", "seconds per TCP transfer"),
    ("BENCH_NET_TPUT_ROUNDS", "2", "sandbox / plain-namespace transfer pairs (alternated; median reported)"),
    ("BENCH_NET_ECHO_N", "2000", "TCP echo round trips per latency measurement"),
    ("BENCH_NET_SANDBOXES", "1000", "sandboxes' policies in the firewall for the filter-cost figure"),
    ("BENCH_NET_POLICY_N", "50", "policy updates per latency figure"),
    ("BENCH_NET_HTTP_N", "500", "HTTP requests per path in the ingress benchmark"),
]

SERVERS = REPO / "tests" / "netlab" / "servers.py"
TARGET = "198.51.100.10"  # "allowed.test" in the fake internet; in the plain pair, the listener's address
DISCARD_PORT, ECHO_PORT = 9, 7

# One script for the sandbox and the plain namespace: the same interpreter (/usr/bin/python3,
# bound into the `base` template) runs it in both.
CLIENT = r"""
import json, socket, sys, time
host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if len(sys.argv) > 5:  # pinned to one CPU (the echo measurements)
    import os
    os.sched_setaffinity(0, {int(sys.argv[5])})
s = socket.create_connection((host, port), timeout=30)
if mode == "send":
    buf = memoryview(bytes(256 * 1024))
    sent = 0
    t0 = time.perf_counter()
    end = t0 + n
    while time.perf_counter() < end:
        s.sendall(buf)
        sent += len(buf)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        reply += chunk
    seconds = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "received": int(reply.strip() or 0), "seconds": seconds}))
else:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    out = []
    for i in range(int(n) + 100):
        t = time.perf_counter()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            chunk = s.recv(len(msg) - got)
            if not chunk:
                raise SystemExit("echo server closed")
            got += len(chunk)
        if i >= 100:  # the first 100 warm up
            out.append((time.perf_counter() - t) * 1e6)
    print(json.dumps({"samples_us": out}))
"""

# ~10 rules, as a user's policy: names (a set each), addresses, CIDRs with ports, denies.
TEN_RULES = {
    "allow_out": ["pypi.org", "*.pythonhosted.org", "198.51.100.10:80", "198.51.100.12:443",
                  {"to": "203.0.113.0/24", "ports": "8000-8100"}, "198.51.100.20"],
    "deny_out": ["198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15", "192.88.99.0/24"],
}  # fmt: skip
# The second policy of the update benchmark: ten rules that keep the fake internet reachable.
TEN_RULES_OPEN = {
    "allow_out": ["198.51.100.0/24", "pypi.org", "*.pythonhosted.org", {"to": "203.0.113.0/24", "ports": "80"},
                  "198.18.0.0/15:443"],
    "deny_out": ["198.51.100.11", "192.88.99.0/24", "203.0.113.64/26", "198.18.0.0/16:22", "198.51.100.12:25"],
}  # fmt: skip

DESCRIPTIONS = {
    T_CREATE: (
        "Two NodeRuntimes side by side on throwaway data dirs, one with networking (uplink: the fake "
        "internet's veth, DNS: its server) and one with `network=None` (loopback-only sandboxes, no veth: "
        "the baseline). Samples alternate between the two (A B, B A, ...), each a `base` sandbox with "
        'policy `"internet"`, killed (untimed, also reported) before the next. Cold: '
        "`rt.create(spec, use_pool=False)`; with networking it adds the address claim, resolv.conf, the veth "
        "pair moved into the container's namespace and configured on both ends (pyroute2, setns on a worker "
        "thread), and the firewall entries and policy (two libnftables batches). Claim: `rt.create(spec)` "
        "taking a ready sandbox from the warm pool (checked by the pool's claim counter), after "
        "`pool.wait_ready()`; a pooled sandbox already has its veth, so networking adds only the policy "
        "batch. The pool's refill starts during the claim, on both nodes alike."
    ),
    T_TPUT: (
        "One TCP connection for BENCH_NET_TPUT_S seconds, a Python sender writing 256 KiB buffers (the same "
        "script and interpreter everywhere), to a discard server that answers the byte count after the "
        "sender's `shutdown(SHUT_WR)`; throughput = bytes the server counted / time until its answer. "
        'Sandbox: exec\'d inside a sandbox (default limits: cpu=1.0) with policy `"internet"`, to the fake '
        "internet's discard port: sandbox veth, host forwarding through cloche's nftables table "
        "(conntrack, masquerade), the uplink veth. Baseline: two plain network namespaces joined by one "
        "veth, the same sender under `ip netns exec` and the fake internet's own server code "
        "(tests/netlab/servers.py) in the other namespace, no cgroup limit, no firewall, no NAT. Rounds "
        "alternate sandbox and baseline; the median round is reported. The echo round trip is 64 bytes "
        "with TCP_NODELAY, BENCH_NET_ECHO_N times on one connection after 100 unmeasured, with the client "
        "and every thread of the echo server pinned to the same CPU: the figure is the path's CPU cost per "
        "round trip, not the wake-up latency of an idle vCPU, which varied from 10 to 75 µs between runs "
        "on this VM with whatever else the host was doing."
    ),
    T_FILTER: (
        'One real sandbox (policy `"internet"`) plus synthetic sandboxes in the node\'s firewall: '
        "`firewall.add_sandbox` and `firewall.apply` with indices from the top of the address pool, "
        "interface names `clvb<index>` (no real link) and a 10-rule policy each (2 host-name rules, each "
        "its own set, 4 address/port allows, 4 denies). Echo round trips and a transfer from inside the "
        "real sandbox, as above, with 10 synthetic sandboxes, then with BENCH_NET_SANDBOXES, then with 10 "
        "again (a drift check). The synthetic entries are removed afterwards."
    ),
    T_POLICY: (
        '`await rt.set_network(id, policy)` on the running sandbox, alternating two policies (`"internet"` '
        "and a 10-rule policy), one at a time: the libnftables batch that replaces its chain, the record "
        "(fsync) and the conntrack cut of open connections now denied, in parallel. The `inside` rows "
        "time those steps with wrappers on the runtime's own objects during the same calls (save and cut "
        "overlap, so they do not add up). `firewall.apply` alone is the batch by itself, called directly. "
        "Measured with 10 and with BENCH_NET_SANDBOXES sandboxes' policies loaded."
    ),
    T_INGRESS: (
        "A real `cloche up` (bench/server.py's BenchServer, networking through the fake internet) with "
        "one sandbox running a stdlib HTTP/1.1 keep-alive server on 0.0.0.0:8000. Sequential GETs of a "
        "2-byte answer from one httpx client with keep-alive: through the path form of the ingress "
        "(`/v1/sandboxes/{id}/ports/8000/`, admin key) vs directly to the sandbox's address from the host, "
        "in alternating blocks of 50."
    ),
    T_GUARD: (
        "The EgressGuard (tests/netlab) counted packets leaving by the host's real interfaces while this "
        "module ran (headed for a documentation range or conntrack-sourced from the sandbox pool: dropped "
        "and counted; any forwarded packet: counted). Leftovers: veths with this run's aliases, its "
        "nftables tables and namespaces, after every node closed."
    ),
}


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def gbit(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e9


def median(xs: list[float]) -> float:
    return percentile(xs, 50)


# ---- the fake internet, the guard, the plain namespace pair --------------------------


def wait_for_other_internet(timeout_s: float) -> None:
    """The test suite's fake internet uses the same fixed addresses: wait until it is gone."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        busy = [line.split()[0] for line in names.splitlines() if line.startswith("clt-inet")]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"another fake internet ({', '.join(busy)}) ran for more than {timeout_s:.0f} s")
        if not announced:
            log(f"network: waiting for {', '.join(busy)} (the test suite's fake internet) to go away")
            announced = True
        time.sleep(2)


def _ip(*argv: str, input: str | None = None) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, input=input, timeout=15)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


class OtherInternets:
    """Watches /run/netns while the module runs: another fake internet (the test suite's,
    started after ours) takes over the route to the fake addresses and spoils the figures."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError):
                self.seen |= {n for n in os.listdir("/run/netns") if n.startswith("clt-inet") and n != self.own}

    def note(self) -> str:
        if not self.seen:
            return ""
        return ("another fake internet (same addresses) ran at the same time, so traffic may have been routed "
                f"to it and the figures are suspect: {', '.join(sorted(self.seen))}")  # fmt: skip

    def __enter__(self) -> OtherInternets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class PlainPair:
    """Two network namespaces joined by one veth, nothing else: the transfer's baseline. The
    listener side runs the fake internet's own servers (tests/netlab/servers.py) on the same
    addresses, so the sender script is run unchanged. Named `nbench-*` (not `cl*`), so the
    test suite's leak checks never mistake them for its own."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.sender, self.listener = f"nbench-snd-{pid}", f"nbench-lsn-{pid}"
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> PlainPair:
        try:
            _ip("netns", "add", self.sender)
            _ip("netns", "add", self.listener)
            _ip("-n", self.sender, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
                self.listener)  # fmt: skip
            for ns in (self.sender, self.listener):
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                "net.ipv6.conf.default.disable_ipv6=1"], capture_output=True)  # fmt: skip
            _ip("-n", self.sender, "-batch", "-", input="link set lo up\nlink set eth0 up\n"
                "addr add 10.99.0.1/30 dev eth0\nroute add 198.51.100.0/24 via 10.99.0.2\n")  # fmt: skip
            _ip("-n", self.listener, "-batch", "-", input="link set lo up\nlink set eth0 up\n"
                "addr add 10.99.0.2/30 dev eth0\naddr add 198.51.100.10/32 dev lo\n"
                "addr add 198.51.100.53/32 dev lo\n")  # fmt: skip
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.listener, sys.executable, str(SERVERS), "--dns", "198.51.100.53:53"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 15)
            if not ready or self.proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the plain pair's servers did not start")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            from tests.netlab import stop_servers

            stop_servers(self.proc, 5)
            self.proc = None
        for ns in (self.sender, self.listener):  # the veth goes with its namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def client(self, port: int, mode: str, n: float, cpu: int | None = None) -> dict[str, Any]:
        pin = [] if cpu is None else [str(cpu)]
        proc = subprocess.run(["ip", "netns", "exec", self.sender, "/usr/bin/python3", "-c", CLIENT, TARGET,
                               str(port), mode, str(n), *pin], capture_output=True, text=True,
                              timeout=n + 60)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"plain pair client failed: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout)

    def names(self) -> list[str]:
        return [self.sender, self.listener]


ECHO_CPU = (os.cpu_count() or 1) - 1


@contextlib.contextmanager
def pinned(pid: int, cpu: int) -> Iterator[None]:
    """Every thread of `pid` on one CPU (threads it starts meanwhile inherit it); all CPUs after."""
    every = set(range(os.cpu_count() or 1))

    def each(cpus: set[int]) -> None:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)

    each({cpu})
    try:
        yield
    finally:
        each(every)


# ---- nodes --------------------------------------------------------------------------


def net_config(inet: Any) -> Any:
    from cloche.node.net.node import NetConfig

    return NetConfig(uplink=inet.uplink, dns_upstreams=(inet.dns,))


def make_node(name: str, pool_size: int, network: Any) -> Any:
    """runtime_bench's Node (throwaway data dir, full teardown and leftover check), with the
    networking given here: never the default NetConfig, whose uplink is the default route's."""
    from runtime_bench import Node

    node = Node(name, pool_size=pool_size)
    node.config = dataclasses.replace(node.config, network=network)
    return node


async def sandbox_client(rt: Any, sid: str, port: int, mode: str, n: float, cpu: int | None = None) -> dict[str, Any]:
    from cloche.node.protocol import ExecRequest

    pin = [] if cpu is None else [str(cpu)]
    res = await rt.exec(sid, ExecRequest(cmd=["python3", "-c", CLIENT, TARGET, str(port), mode, str(n), *pin],
                                         timeout_s=n + 60))  # fmt: skip
    if res.exit_code != 0:
        raise RuntimeError(f"in-sandbox client exited {res.exit_code}: {res.stderr.decode()[-500:]}")
    return json.loads(res.stdout)


def transfer_gbit(res: dict[str, Any]) -> float:
    if res["received"] != res["sent"]:
        raise RuntimeError(f"the discard server counted {res['received']} of {res['sent']} bytes")
    return gbit(res["received"], res["seconds"])


# ---- 1. create and claim --------------------------------------------------------------


async def bench_create(inet: Any) -> list[Result]:
    from cloche.node.net.policy import NetworkPolicy
    from cloche.node.spec import SandboxSpec

    n = env_int("BENCH_NET_CREATE_N", 30)
    pool = env_int("BENCH_NET_POOL_SIZE", 2)
    spec = SandboxSpec(network=NetworkPolicy.from_json("internet"))
    samples: dict[tuple[str, str], list[float]] = {(p, k): [] for p in ("cold", "claim", "kill") for k in ("off", "on")}
    async with make_node("netoff", pool, None) as off, make_node("neton", pool, net_config(inet)) as on:
        nodes = {"off": off, "on": on}
        await asyncio.gather(off.pool.wait_ready(timeout=120), on.pool.wait_ready(timeout=120))
        # warm-up (unmeasured), and proof that a claimed sandbox is on the fake internet
        for kind, rt in nodes.items():
            for use_pool in (False, True):
                rec = await rt.create(spec, use_pool=use_pool)
                if kind == "on":
                    res = await sandbox_client(rt, rec.id, ECHO_PORT, "echo", 10)
                    if len(res["samples_us"]) != 10:
                        raise RuntimeError("a networked sandbox could not reach the fake internet")
                await rt.kill(rec.id)
                await rt.pool.wait_ready(timeout=120)
        for phase in ("cold", "claim"):
            log(f"network: {phase} creates, {n} per node, alternating")
            for i in range(n):
                for kind in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    rt = nodes[kind]
                    await rt.pool.wait_ready(timeout=120)
                    claims = rt.pool.claims
                    t0 = time.perf_counter()
                    rec = await rt.create(spec, use_pool=phase == "claim")
                    samples[(phase, kind)].append(ms_since(t0))
                    if phase == "claim" and rt.pool.claims != claims + 1:
                        raise RuntimeError("a create meant to claim from the pool did not")
                    if kind == "on" and rt.network.link(rec.id) is None:
                        raise RuntimeError("a sandbox of the networked node has no link")
                    t0 = time.perf_counter()
                    await rt.kill(rec.id)
                    samples[("kill", kind)].append(ms_since(t0))
    out: list[Result] = []
    names = {"cold": "cold create", "claim": "warm-pool claim"}
    for phase in ("cold", "claim"):
        out += latency_results(f"net.{phase}.off", T_CREATE, f"{names[phase]}, networking off (baseline)",
                               samples[(phase, "off")], percentiles=(50, 99))  # fmt: skip
        out += latency_results(f"net.{phase}.on", T_CREATE, f"{names[phase]}, networking on",
                               samples[(phase, "on")], percentiles=(50, 99),
                               baselines={50: f"net.{phase}.off.p50", 99: f"net.{phase}.off.p99"})  # fmt: skip
        for p in (50, 99):
            added = percentile(samples[(phase, "on")], p) - percentile(samples[(phase, "off")], p)
            goal = Goal("<=", 2) if (phase, p) == ("claim", 50) else None
            out.append(Result(f"net.{phase}.added.p{p}", T_CREATE, f"{names[phase]}: added by networking, p{p}",
                              added, "ms", goal=goal))  # fmt: skip
    kill_off, kill_on = samples[("kill", "off")], samples[("kill", "on")]
    out.append(Result("net.kill.off.p50", T_CREATE, f"kill after each sample, networking off p50 (n={len(kill_off)})",
                      percentile(kill_off, 50), "ms"))  # fmt: skip
    out.append(Result("net.kill.on.p50", T_CREATE, f"kill after each sample, networking on p50 (n={len(kill_on)})",
                      percentile(kill_on, 50), "ms", baseline="net.kill.off.p50"))  # fmt: skip
    return out


# ---- 2-4. throughput, filter cost, policy updates on one node ----------------------


def synthetic_entries(fw: Any, pool: Any, indices: list[int], policy: Any, loaded: list[int]) -> list[float]:
    """Add synthetic sandboxes to the firewall (noted in `loaded` as they go in); returns
    the ms each add + apply took."""
    took = []
    for index in indices:
        t0 = time.perf_counter()
        address = pool.link(index).address
        loaded.append(index)
        fw.add_sandbox(index, f"clvb{index}", address)
        fw.apply(index, address, policy)
        took.append(ms_since(t0))
    return took


def remove_synthetic(fw: Any, pool: Any, indices: list[int]) -> None:
    for index in indices:
        fw.remove_sandbox(index, f"clvb{index}", pool.link(index).address)


STEPS = {"apply": "`NodeNetwork.apply` (shaping check + firewall batch)", "save": "record save (fsync)",
         "cut": "conntrack cut (`conntrack -D`, a process)"}  # fmt: skip


async def policy_updates(rt: Any, sid: str, policies: list[Any], n: int
                         ) -> tuple[list[float], list[float], dict[str, float]]:  # fmt: skip
    """(set_network samples, firewall.apply samples, mean ms per set_network of each of its
    steps, from timing wrappers on the runtime's own objects), alternating the policies."""
    from runtime_bench import StepTimer

    link = rt.network.link(sid)
    fw = rt.network.firewall
    via_runtime, alone = [], []
    timer = StepTimer()
    timer.wrap(rt.network, "apply", "apply")
    timer.wrap(rt.records, "save", "save")
    timer.wrap(rt.network, "cut", "cut")
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await rt.set_network(sid, policies[i % 2])
            via_runtime.append(ms_since(t0))
    finally:
        timer.restore()
    steps = {k: timer.totals.get(k, 0.0) / n for k in STEPS}
    for i in range(n):
        t0 = time.perf_counter()
        fw.apply(link.index, link.address, policies[i % 2])
        alone.append(ms_since(t0))
    await rt.set_network(sid, policies[0])  # the runtime's view and the table agree again
    return via_runtime, alone, steps


async def bench_node(inet: Any, pair_names: list[str]) -> list[Result]:
    from cloche.node.net.policy import NetworkPolicy
    from cloche.node.spec import SandboxSpec

    secs = env_float("BENCH_NET_TPUT_S", 3)
    rounds = env_int("BENCH_NET_TPUT_ROUNDS", 2)
    echo_n = env_int("BENCH_NET_ECHO_N", 2000)
    many = env_int("BENCH_NET_SANDBOXES", 1000)
    upd_n = env_int("BENCH_NET_POLICY_N", 50)
    internet = NetworkPolicy.from_json("internet")
    ten = NetworkPolicy.from_json(TEN_RULES)
    ten_open = NetworkPolicy.from_json(TEN_RULES_OPEN)
    out: list[Result] = []
    async with make_node("netfw", 0, net_config(inet)) as rt:
        rec = await rt.create(SandboxSpec(network=internet), use_pool=False)
        sid = rec.id

        async def echo() -> list[float]:
            with pinned(inet.proc.pid, ECHO_CPU):
                return (await sandbox_client(rt, sid, ECHO_PORT, "echo", echo_n, ECHO_CPU))["samples_us"]

        async def tput() -> float:
            return transfer_gbit(await sandbox_client(rt, sid, DISCARD_PORT, "send", secs))

        # 2. throughput vs a plain namespace pair
        try:
            log(f"network: throughput, {rounds} x ({secs:g} s sandbox, {secs:g} s plain pair)")
            with PlainPair() as pair:
                pair_names += pair.names()
                sb, plain = [], []
                for _ in range(rounds):
                    sb.append(await tput())
                    plain.append(transfer_gbit(await asyncio.to_thread(pair.client, DISCARD_PORT, "send", secs)))
                assert pair.proc is not None
                with pinned(pair.proc.pid, ECHO_CPU):
                    pres = await asyncio.to_thread(pair.client, ECHO_PORT, "echo", echo_n, ECHO_CPU)
                plain_echo = pres["samples_us"]
            sb_echo = await echo()
            rounds_note = (f"rounds: sandbox {', '.join(f'{x:.2f}' for x in sb)} Gbit/s; plain pair "
                           f"{', '.join(f'{x:.2f}' for x in plain)} Gbit/s")  # fmt: skip
            out += [
                Result("net.tput.plain", T_TPUT, "TCP throughput, plain namespace pair (baseline)", median(plain),
                       "Gbit/s", note=rounds_note),
                Result("net.tput.sandbox", T_TPUT, "TCP throughput, sandbox -> fake internet", median(sb), "Gbit/s",
                       goal=Goal(">=", 0.9, on="ratio"), baseline="net.tput.plain"),
                Result("net.echo.plain.p50", T_TPUT, f"echo round trip p50, plain pair (n={len(plain_echo)})",
                       percentile(plain_echo, 50), "µs"),
                Result("net.echo.sandbox.p50", T_TPUT, f"echo round trip p50, sandbox (n={len(sb_echo)})",
                       percentile(sb_echo, 50), "µs", baseline="net.echo.plain.p50"),
                Result("net.echo.plain.p99", T_TPUT, "echo round trip p99, plain pair", percentile(plain_echo, 99),
                       "µs"),
                Result("net.echo.sandbox.p99", T_TPUT, "echo round trip p99, sandbox", percentile(sb_echo, 99), "µs",
                       baseline="net.echo.plain.p99"),
            ]  # fmt: skip
        except Exception as exc:
            log(f"network: throughput failed: {exc!r}")
            out.append(failed("net.tput.sandbox", T_TPUT, "TCP throughput, sandbox -> fake internet", exc, "Gbit/s"))

        # 3 + 4. filter cost and policy updates, with 10 then `many` sandboxes' policies
        fw, pool = rt.network.firewall, rt.network.pool
        top = pool.size - 1
        indices = list(range(top, top - many, -1))
        loaded: list[int] = []
        try:
            figures: dict[str, dict[str, Any]] = {}

            async def measure(label: str, with_updates: bool) -> None:
                log(f"network: filter cost with {label} sandboxes' policies")
                f: dict[str, Any] = {"echo": await echo(), "tput": await tput()}
                if with_updates:
                    f["set"], f["apply"], f["steps"] = await policy_updates(rt, sid, [internet, ten_open], upd_n)
                figures[label] = f

            synthetic_entries(fw, pool, indices[:10], ten, loaded)
            await measure("10", True)
            t0 = time.perf_counter()
            add_ms = synthetic_entries(fw, pool, indices[10:], ten, loaded)
            load_s = ms_since(t0) / 1000
            await measure(str(many), True)
            t0 = time.perf_counter()
            remove_synthetic(fw, pool, indices[10:])
            del loaded[10:]
            remove_s = ms_since(t0) / 1000
            await measure("10 again", False)
            a, b, c = figures["10"], figures[str(many)], figures["10 again"]
            out += [
                Result("net.filter.echo10.p50", T_FILTER, f"echo round trip p50, 10 sandboxes (n={len(a['echo'])})",
                       percentile(a["echo"], 50), "µs"),
                Result("net.filter.echo_many.p50", T_FILTER, f"echo round trip p50, {many:,} sandboxes",
                       percentile(b["echo"], 50), "µs", goal=Goal("<=", 1.1, on="ratio"),
                       baseline="net.filter.echo10.p50"),
                Result("net.filter.echo10b.p50", T_FILTER, "echo round trip p50, 10 sandboxes again (drift check)",
                       percentile(c["echo"], 50), "µs", baseline="net.filter.echo10.p50"),
                Result("net.filter.echo10.p99", T_FILTER, "echo round trip p99, 10 sandboxes",
                       percentile(a["echo"], 99), "µs"),
                Result("net.filter.echo_many.p99", T_FILTER, f"echo round trip p99, {many:,} sandboxes",
                       percentile(b["echo"], 99), "µs", baseline="net.filter.echo10.p99"),
                Result("net.filter.tput10", T_FILTER, "TCP throughput, 10 sandboxes", a["tput"], "Gbit/s"),
                Result("net.filter.tput_many", T_FILTER, f"TCP throughput, {many:,} sandboxes", b["tput"], "Gbit/s",
                       goal=Goal(">=", 0.9, on="ratio"), baseline="net.filter.tput10"),
                Result("net.filter.tput10b", T_FILTER, "TCP throughput, 10 sandboxes again (drift check)", c["tput"],
                       "Gbit/s", baseline="net.filter.tput10"),
                Result("net.filter.add_ms", T_FILTER, f"add_sandbox + apply per synthetic sandbox, 10 -> {many:,} "
                       "(mean)", sum(add_ms) / len(add_ms), "ms",
                       note=f"loading {len(add_ms)} synthetic sandboxes took {load_s:.1f} s (first {add_ms[0]:.2f} ms, "
                       f"last {add_ms[-1]:.2f} ms); removing them {remove_s:.1f} s"),
            ]  # fmt: skip
            for label, key, goal in (("10", "10", Goal("<=", 10)), (str(many), "many", None)):
                f = figures[label]
                out += latency_results(f"net.policy{key}.set", T_POLICY,
                                       f"`rt.set_network`, {int(label):,} sandboxes loaded", f["set"],
                                       percentiles=(50, 99), goals={50: goal} if goal else None)  # fmt: skip
                out += latency_results(f"net.policy{key}.apply", T_POLICY,
                                       f"`firewall.apply` alone, {int(label):,} sandboxes loaded", f["apply"],
                                       percentiles=(50, 99))  # fmt: skip
                for step, text in STEPS.items():
                    out.append(Result(f"net.policy{key}.step.{step}", T_POLICY,
                                      f"inside `rt.set_network`, {int(label):,} loaded: {text}, mean",
                                      f["steps"][step], "ms"))  # fmt: skip
        except Exception as exc:
            log(f"network: filter/policy benchmark failed: {exc!r}")
            out.append(failed("net.filter.echo_many.p50", T_FILTER, "filter cost with many sandboxes", exc, "µs"))
        finally:
            remove_synthetic(fw, pool, loaded)
        await rt.kill(sid)
    return out


# ---- 5. ingress ------------------------------------------------------------------------

HTTP_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):  # one write: head and body in one segment (no Nagle / delayed-ACK stall)
        self.wfile.write(ANSWER)
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def ingress_available() -> str | None:
    """None if the ingress can be measured, else why not."""
    if not (REPO / "src" / "cloche" / "server" / "ingress").is_dir():
        return "src/cloche/server/ingress/ does not exist"
    routes = REPO / "src" / "cloche" / "server" / "routes"
    if not any("/ports/{port}" in p.read_text() for p in routes.glob("*.py")):
        return "no /v1/sandboxes/{id}/ports/{port}/ route"
    return None


def bench_ingress(inet: Any) -> list[Result]:
    import httpx
    from server import BenchServer

    from cloche.config import INIT_BINARY
    from cloche.node.runtime import NodeConfig, NodeRuntime

    why = ingress_available()
    if why:
        return [Result("net.ingress.skipped", T_INGRESS, "ingress benchmark", None, "", note=f"skipped: {why}")]
    n = env_int("BENCH_NET_HTTP_N", 500)
    port = 8000
    server = BenchServer("ingress", pool_size=0,
                         env={"CLOCHE_NETWORK_UPLINK": inet.uplink, "CLOCHE_NETWORK_DNS": inet.dns})  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as api:
            r = api.post("/v1/sandboxes", json={"network": "internet"})
            r.raise_for_status()
            sid = r.json()["id"]

            def sh(cmd: str, stdin: str | None = None) -> dict[str, Any]:
                r = api.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": cmd, "stdin": stdin})
                r.raise_for_status()
                return r.json()

            sh("cat > /workspace/srv.py", stdin=HTTP_SERVER)
            sh(f"setsid python3 /workspace/srv.py {port} >/workspace/srv.log 2>&1 </dev/null &")
            probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
            deadline = time.time() + 15
            while sh(f'python3 -c "{probe}"')["exit_code"] != 0:
                if time.time() > deadline:
                    raise RuntimeError(f"the in-sandbox server never listened: {sh('cat /workspace/srv.log')}")
                time.sleep(0.05)
            address = api.get(f"/v1/sandboxes/{sid}").json()["network"]["address"]
            path = f"/v1/sandboxes/{sid}/ports/{port}/"
            with httpx.Client(base_url=f"http://{address}:{port}", timeout=10) as direct:

                def get(client: httpx.Client, url: str) -> float:
                    t0 = time.perf_counter()
                    resp = client.get(url)
                    took = ms_since(t0)
                    if resp.status_code != 200 or resp.content != b"ok":
                        raise RuntimeError(f"GET {url}: {resp.status_code} {resp.text[:300]}")
                    return took

                for _ in range(50):  # warm-up: connections, the proxy's pool
                    get(direct, "/")
                    get(api, path)
                via_direct: list[float] = []
                via_ingress: list[float] = []
                log(f"network: HTTP through the ingress vs direct, {n} each")
                while len(via_direct) < n:
                    block = min(50, n - len(via_direct))
                    via_direct += [get(direct, "/") for _ in range(block)]
                    via_ingress += [get(api, path) for _ in range(block)]
            api.delete(f"/v1/sandboxes/{sid}")
    finally:
        # BenchServer.close would wipe with the default NetConfig (uplink: the default route's
        # interface): stop the server here and wipe with the fake internet as the uplink.
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
        server.log.close()

        async def wipe() -> None:
            rt = NodeRuntime(NodeConfig(data_dir=server.data, init_binary=INIT_BINARY, network=net_config(inet)))
            await rt.start()
            for rec in rt.all_records():
                await rt.kill(rec.id)
            await rt.close()

        try:
            asyncio.run(wipe())
        finally:
            shutil.rmtree(server.data, ignore_errors=True)
    out = latency_results("net.ingress.direct", T_INGRESS, "GET direct to the sandbox's address (baseline)",
                          via_direct, percentiles=(50, 99))  # fmt: skip
    out += latency_results("net.ingress.proxy", T_INGRESS, "GET through the ingress (path form)", via_ingress,
                           percentiles=(50, 99),
                           baselines={50: "net.ingress.direct.p50", 99: "net.ingress.direct.p99"})  # fmt: skip
    added = percentile(via_ingress, 50) - percentile(via_direct, 50)
    out.append(Result("net.ingress.added.p50", T_INGRESS, "added by the ingress, p50", added, "ms",
                      goal=Goal("<=", 0.5), note="goal: ingress.py's own (at most 0.5 ms added at p50)"))  # fmt: skip
    return out


# ---- run ------------------------------------------------------------------------------


def leftovers(keys: set[str], pair_names: list[str]) -> list[str]:
    from cloche.node.net import links

    found = [f"veth {name} ({alias})" for name, alias in links.ours("cloche:") if alias.split(":")[1] in keys]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft table {t}" for t in re.findall(r"table inet (cloche_\w+)", tables) if t[len("cloche_") :] in keys]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in pair_names if re.search(rf"^{re.escape(n)}\b", netns, re.M)]
    return found


def run() -> list[Result]:
    from cloche.node.net.node import NetConfig
    from tests.netlab import EgressGuard, FakeInternet

    wait_for_other_internet(env_float("BENCH_NET_WAIT_S", 600))
    note_conditions("before network")
    out: list[Result] = []
    keys_before = set(OWN_NODE_KEYS)
    pair_names: list[str] = []
    steps: list[tuple[str, Callable[[Any], list[Result]]]] = [
        ("create", lambda inet: asyncio.run(bench_create(inet))),
        ("node", lambda inet: asyncio.run(bench_node(inet, pair_names))),
        ("ingress", bench_ingress),
    ]
    with EgressGuard(pool=NetConfig.pool) as guard:
        with FakeInternet() as inet, OtherInternets(inet.netns) as others:
            for name, step in steps:
                try:
                    out += step(inet)
                except Exception as exc:
                    import traceback

                    traceback.print_exc()
                    out.append(failed(f"net.{name}.failed", T_GUARD, f"{name} benchmark", exc))
        counts = guard.packets()
    out.append(Result("net.other_internets", T_GUARD, "other fake internets that appeared during the run",
                      len(others.seen), "namespaces", goal=Goal("<=", 0), note=others.note()))  # fmt: skip
    escaped = counts["egress"] + counts["forward"]
    out.append(Result("net.guard.packets", T_GUARD, "packets counted on the host's real interfaces", escaped,
                      "packets", goal=Goal("<=", 0), note=f"EgressGuard counters: {counts}"))  # fmt: skip
    left = leftovers(set(OWN_NODE_KEYS) - keys_before, pair_names)
    out.append(Result("net.leftovers", T_GUARD, "network objects left behind", len(left), "objects",
                      goal=Goal("<=", 0), note=("left: " + ", ".join(left)) if left else ""))  # fmt: skip
    return out


# ---- rendering this module's section alone -----------------------------------------------

SECTION = "network_bench"


def merge(results_json: Path, target: Path) -> str:
    """Render this module's tables from a saved run (run.py's renderer) into the marked
    section of `target`, before its plots; the rest of the file is left as it is."""
    import run as runner

    saved, results = runner.load(results_json)
    mine = [r for r in results if r.table in TABLES]
    if not mine:
        raise SystemExit(f"{results_json} holds no network_bench results")
    with tempfile.TemporaryDirectory() as tmp:
        rendered = runner.markdown(saved, mine, [], Path(tmp) / "x.md")
    blocks = re.split(r"^(?=## )", rendered, flags=re.M)
    tables = [b for b in blocks if b.split("\n", 1)[0][3:].strip() in TABLES]
    resolved = runner.resolve(mine)
    goals = [r for r in mine if r.goal]
    met = sum(1 for r in goals if resolved[r.key][2])
    missed = [f"{r.metric}" for r in goals if resolved[r.key][2] is False]
    errors = [r.metric for r in mine if r.error and not r.goal]
    started = saved["started"][:16].replace("T", " ")
    conditions = "; ".join(f"{m}: host CPU busy {busy:.0f} %, {n} foreign sandbox processes"
                           for m, _, n, busy in saved["conditions"])  # fmt: skip
    commit = dict(saved["machine"]).get("cloche commit", "?")
    head = (f"_Measured {started} UTC by this module alone (`BENCH_MODULES=network_bench` ... `bench/run.py`, "
            f"then `bench/network_bench.py --merge`; see its docstring), wall time {saved['wall_s'] / 60:.1f} min, "
            f"cloche commit {commit}, same machine as above. {met} of {len(goals)} goals met"
            + (f" (missed: {'; '.join(missed)})" if missed else "")
            + (f"; **failed**: {'; '.join(errors)}" if errors else "")
            + f"; not counted in the Summary above. Run conditions: {conditions}._\n\n")  # fmt: skip
    first, *rest = tables
    title, body = first.split("\n", 1)
    parts = [f"{title}\n\n{head}{body.strip()}", *(block.strip() for block in rest)]
    section = "\n\n".join(parts) + "\n"
    text = target.read_text()
    begin, end = f"<!-- {SECTION}: begin -->", f"<!-- {SECTION}: end -->"
    block = f"{begin}\n{section}{end}\n"
    if begin in text and end in text:
        before, rest_text = text.split(begin, 1)
        _, after = rest_text.split(end, 1)
        text = before + block + "\n" + after.lstrip("\n")
    elif "\n## Plots\n" in text:
        before, after = text.split("\n## Plots\n", 1)
        text = before.rstrip("\n") + "\n\n" + block + "\n## Plots\n" + after  # (block ends in a newline)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    target.write_text(text)
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="network_bench: render its section into BENCHMARKS.md")
    parser.add_argument("--merge", type=Path, required=True, metavar="RESULTS_JSON",
                        help="a run.py results file (BENCH_JSON) holding this module's results")  # fmt: skip
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    print(merge(args.merge, args.output))
    print(f"wrote the {SECTION} section of {args.output}")
