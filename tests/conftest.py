"""Shared fixtures: a real node runtime (real runc, real mounts) driven from sync tests.

The runtime is asynchronous; `Node` runs it on an event loop in a background thread so
tests stay plain functions. Each test module gets its own node on its own data
directory, and the node is torn down (every sandbox killed) when the module ends, so
the leak check, which runs last, sees a clean host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import pytest
from hypothesis import settings

from cloche.cluster.local.weed import WeedS3
from cloche.node.net.node import NetConfig
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeConfig, NodeRuntime
from cloche.node.spec import ISOLATIONS, IdlePolicy, Limits, SandboxSpec
from cloche.node.supervisor import ExecResult
from tests.cli_zygote import SERVER_ZYGOTE, ZYGOTE
from tests.netlab import EgressGuard, FakeInternet

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
INIT_BINARY = REPO / "src" / "cloche" / "_bin" / "cloche-init"


# Hypothesis's per-example deadline (200 ms) is a timing test: on a shared 2-core machine
# it fails on load, not on bugs. Speed is measured by bench/, not here.
settings.register_profile("cloche", deadline=None)
settings.load_profile("cloche")


# Tests (by node id prefix: a directory, a module or a test) that need the host to themselves, so a
# parallel run (`make test`: pytest-xdist, then these alone) runs them after the rest, one at a
# time; the reason is beside each.
SERIAL = {
    "tests/cluster/test_self_fencing.py": "freezes and cuts etcd against the clock; under a full parallel run "
    "the lease of the frozen node lapsed too late for its timings",
    "tests/network/": "the one SOCKS proxy, the shared DNS and request logs, host-wide network inventories",
    "tests/e2b/test_network.py": "the SOCKS proxy and the shared request log",
    "tests/integration/test_sdk_network.py": "counts the fake DNS server's queries",
    "tests/netlab/test_netlab.py": "host-wide before/after inventories of the harness's network objects",
    "tests/clusterlocal/test_regions.py": "adds and removes network namespaces, veths and nftables tables",
    "tests/clustermode/test_regions_net.py": "measures round trips between and within region namespaces (within "
    "a region under 20 ms: 21.6 ms in a full parallel run)",
    "tests/clustermode/test_regions_place.py": "region clusters of 4 nodes behind a delaying relay: in a full parallel "
    "run a node's etcd keep-alive missed its deadline, it fenced, and the cluster never listed all four in 60 s",
    "tests/clustermode/test_regions_move.py": "region clusters, as test_regions_place.py",
    "tests/integration/test_node_gc.py": "collects sandboxes of unknown owners",
    "tests/integration/test_shutdown.py": "runs 10 sandboxes through SIGTERM against a 20 s drain deadline",
    "tests/adversarial/test_resources.py": "CPU hogs and bombs; a neighbour's speed is measured against the host's",
    "tests/unit/test_egress_proxy.py::test_https_injected": "times a relayed request (no 40 ms delayed-ACK stall)",
    "tests/unit/test_socks_tunnel.py": "counts connections to loopback ports another worker may pick",
    "tests/zz_leakcheck/": "after everything else: nothing of cloche's may remain on the host",
}


# Groups of tests (by node id prefix, the first that matches) that run in the parallel
# phase, each group on one worker, one test after the other: with `--dist loadfile`,
# pytest-xdist hands each module to a single worker, and a group's modules count as one (see
# pytest_xdist_make_scheduler). Whole clusters (etcd, PostgreSQL, SeaweedFS, five cloche
# processes) start one at a time in each group: the modules with a cluster of their own in
# one, the suites on the package's shared cluster in the other (~110 s and ~80 s of tests,
# measured with `--durations=0`; as one group they were the phase's longest worker). The
# region clusters are serial (SERIAL).
TOGETHER = (
    ("tests/clustermode/test_cluster.py", "tests/clustermode/test_faults.py", "tests/clustermode/test_envd_home.py"),
    ("tests/clustermode/",),
)


# The parallel phase's longest modules (wall seconds summed over their tests, measured with
# `--durations=0` in a parallel run), heaviest first. They are collected
# first and `make test` keeps that order (`--no-loadscope-reorder`; pytest-xdist would
# otherwise hand out the modules with the most tests first), so they start at once instead
# of one of them running alone at the end: the phase's wall time then comes near its total
# test time divided by the workers.
LONGEST_FIRST = (
    "tests/clustermode/",  # ~110 s and ~80 s: its two groups (TOGETHER)
    "tests/adversarial/test_crash.py",  # ~85 s
    "tests/integration/test_hibernate_api.py",  # ~65 s
    "tests/integration/test_cli.py",  # ~60 s
    "tests/state/test_crash.py",  # ~45 s
    "tests/e2b/test_gvisor.py",  # ~45 s
    "tests/integration/test_cli_network.py",  # ~45 s
    "tests/integration/test_schema.py",  # ~45 s
    "tests/integration/test_cli_agents.py",  # ~45 s
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "offline: the test starts no node, server or sandbox (see `internet`)")
    config.addinivalue_line("markers", "serial: the test needs the host to itself (see SERIAL)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m serial` (make test's serial phase), the modules SERIAL does not name are not
    even imported: the phase would otherwise collect the whole suite to keep a tenth of it."""
    if (config.getoption("markexpr") != "serial" or collection_path.suffix != ".py"
            or not collection_path.is_relative_to(config.rootpath)):  # fmt: skip
        return None
    rel = collection_path.relative_to(config.rootpath).as_posix()
    if not rel.startswith("tests/") or collection_path.name == "conftest.py" or "/" not in rel[6:]:
        return None
    named = any(key.split("::")[0].startswith(rel) or rel.startswith(key) for key in SERIAL)
    return None if named else True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.nodeid.startswith(prefix) for prefix in SERIAL):
            item.add_marker(pytest.mark.serial)

    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    # a stable sort: every other module keeps its place, the leak check stays last
    items.sort(key=rank)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with each TOGETHER group's modules as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class TogetherScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = next((i for i, prefixes in enumerate(TOGETHER) if nodeid.startswith(prefixes)), None)
            return super()._split_scope(nodeid) if group is None else f"together-{group}"

    return TogetherScheduling(config, log)


def mark_offline(items: list[pytest.Item], directory: Path, *, but: tuple[str, ...] = ()) -> None:
    """Mark the tests under ``directory`` (a conftest's own), except the modules named in
    ``but``, as offline: for a conftest's ``pytest_collection_modifyitems``."""
    for item in items:
        if item.path.is_relative_to(directory) and item.path.name not in but:
            item.add_marker(pytest.mark.offline)


@contextlib.contextmanager
def _pointed_at(inet: FakeInternet) -> Iterator[None]:
    """Every node and server this process starts (and its children) routes out through ``inet``."""
    with mock.patch.dict(os.environ, {"CLOCHE_NETWORK_UPLINK": inet.uplink, "CLOCHE_NETWORK_DNS": inet.dns,
                                      # secure.test's CA, for the egress proxy
                                      "CLOCHE_EGRESS_UPSTREAM_CA_FILE": str(inet.ca_pem_path)}):  # fmt: skip
        yield


@pytest.fixture(scope="session", autouse=True)
def cli_zygote() -> Iterator[None]:
    """The zygotes of CLI commands and servers (tests/cli_zygote.py), if a test started them, go with the session."""
    yield
    ZYGOTE.stop()
    SERVER_ZYGOTE.stop()


@pytest.fixture(scope="session", autouse=True)
def internet(request: pytest.FixtureRequest) -> Iterator[FakeInternet | None]:
    """The suite's own internet: sandboxes may leave the node only through its uplink
    (every server and node the tests start is pointed at it), and the guard proves at
    the end that no packet of theirs went out of a real interface.

    One runs per host, shared by the test sessions (and pytest-xdist workers) that use it
    at the same time; a session with serial tests waits to have it alone. A session of
    offline tests alone (unit tests, the engine conformance suite) goes without it."""
    if all(item.get_closest_marker("offline") for item in request.session.items):
        yield None
        return
    alone = any(item.get_closest_marker("serial") for item in request.session.items)
    with EgressGuard(pool=NetConfig.pool) as guard, FakeInternet(shared=not alone) as inet, _pointed_at(inet):
        yield inet
        guard.assert_clean()


def suite_network() -> NetConfig:
    """Node networking as the suite uses it: out through the fake internet only."""
    uplink = os.environ.get("CLOCHE_NETWORK_UPLINK", "clt-no-uplink")
    return NetConfig(uplink=uplink, dns_upstreams=tuple(filter(None, [os.environ.get("CLOCHE_NETWORK_DNS")])))


class LoopThread:
    """An event loop running in a daemon thread, for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """``agen`` as a blocking iterator; closing it closes ``agen`` on the loop."""
        try:
            while True:
                try:
                    item = self.run(anext(agen), None)  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(agen, "aclose", None)
            if close is not None:
                self.run(close(), None)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class Node:
    """A NodeRuntime plus sync helpers for tests."""

    def __init__(self, data_dir: Path, pool_size: int = 0, isolation: str = "runc", **config_kw: Any) -> None:
        self.loop = LoopThread()
        self.isolation = isolation  # the tier of the pool and of sandboxes made by `create`
        config_kw.setdefault("network", suite_network())
        config = NodeConfig(data_dir=data_dir, init_binary=INIT_BINARY, pool_size=pool_size, isolation=isolation,
                            **config_kw)  # fmt: skip
        self.rt = self.loop.run(_make_runtime(config))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.loop.run(coro, timeout)

    def create(self, template: str = "base", env: dict[str, str] | None = None, idle: IdlePolicy | None = None,
               **limits: Any) -> SandboxRecord:  # fmt: skip
        spec = SandboxSpec(template=template, limits=Limits(**limits), env=env or {}, idle=idle or IdlePolicy(),
                           isolation=self.isolation)  # fmt: skip
        return self.run(self.rt.create(spec))

    def exec(self, sandbox_id: str, cmd: list[str] | str, **kw: Any) -> ExecResult:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd
        return self.run(self.rt.exec(sandbox_id, ExecRequest(cmd=argv, **kw)))

    def sh(self, sandbox_id: str, script: str, **kw: Any) -> ExecResult:
        return self.exec(sandbox_id, script, **kw)

    def kill(self, sandbox_id: str) -> None:
        self.run(self.rt.kill(sandbox_id))

    def close(self) -> None:
        for rec in self.rt.all_records():
            try:
                self.run(self.rt.kill(rec.id))
            except Exception:
                pass
        self.run(self.rt.close())
        self.loop.stop()


async def _make_runtime(config: NodeConfig) -> NodeRuntime:
    rt = NodeRuntime(config)
    await rt.start()
    return rt


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("node"))
    yield n
    n.close()


@pytest.fixture(scope="module", params=ISOLATIONS)
def tier_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The test matrix over isolation tiers: a module whose `node` is this one runs each
    of its tests once per tier (runc, then gVisor)."""
    n = Node(tmp_path_factory.mktemp(f"node-{request.param}"), isolation=request.param)
    yield n
    n.close()


@pytest.fixture(scope="module")
def sandbox(node: Node) -> Iterator[SandboxRecord]:
    """One running `base` sandbox shared by a module's read-only checks."""
    rec = node.create()
    yield rec
    node.kill(rec.id)


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs tarball with Debian's static busybox and nothing else (no Python, no libc)."""
    import shutil
    import tarfile

    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "echo", "id", "rm", "mkdir", "touch", "sleep", "dd", "grep",
                   "head", "wc", "ps", "true", "false", "env", "pwd", "stat", "ln", "df"):  # fmt: skip
        (root / "bin" / applet).symlink_to("busybox")
    tarball = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    return tarball


@pytest.fixture(scope="session")
def s3_server() -> Iterator[WeedS3]:
    """A real SeaweedFS S3 server for the session, its credentials in boto3's environment."""
    server = WeedS3(Path(tempfile.mkdtemp(prefix="cloche-weed-")))
    with pytest.MonkeyPatch.context() as env:
        for name, value in server.credentials().items():
            env.setenv(name, value)
        yield server
    server.stop()
