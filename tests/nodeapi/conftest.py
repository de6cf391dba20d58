"""The node interface two ways: the in-process NodeRuntime, and a RemoteNode talking to
a real `cloche node run` subprocess over HTTPS on loopback. Suites parametrized over
`impl` run the same assertions against both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cloche.node.api import Node as NodeInterface
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecResult
from cloche.nodeapi import tls
from cloche.nodeapi.client import RemoteNode
from tests.cli_zygote import run_cli
from tests.conftest import LoopThread, Node
from tests.integration.conftest import free_port

T = TypeVar("T")


class Agent:
    """`cloche node run` as a subprocess, with its own data and cluster directories."""

    def __init__(self, root: Path) -> None:
        self.data_dir, self.cluster_dir = root / "node", root / "cluster"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = root / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        return self.cluster_dir / tls.CA_CERT

    def credential(self) -> str:
        return (self.data_dir / "nodeapi" / "credential").read_text().strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(["node", *args], text=True, check=True, timeout=60)

    def http(self, credential: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
        return httpx.Client(base_url=self.url, verify=tls.client_context(self.ca), headers=headers, timeout=30)

    def start(self) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloche.cli", "node", "run", "--data-dir", str(self.data_dir),
             "--cluster-dir", str(self.cluster_dir), "--listen", f"127.0.0.1:{self.port}", "--pool-size", "0",
             "--on-shutdown", "kill"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ),
        )  # fmt: skip
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloche node exited: {self.log.read_text()[-3000:]}")
            try:
                with self.http(self.credential()) as c:
                    if c.get("/v1/info").status_code == 200:
                        return
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError("cloche node did not answer")

    def rss_peak(self) -> int:
        """The node process's peak resident memory (VmHWM), in bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        """SIGTERM: the node kills its sandboxes and exits; nothing of it stays."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        left = list((self.data_dir / "node" / "sandboxes").glob("*/record.json"))
        assert not left, f"the node left sandboxes behind: {left}"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"))
    a.start()
    yield a
    a.stop()


@dataclass
class Impl:
    """One implementation of the node interface, driven from sync tests."""

    name: str
    node: NodeInterface
    loop: LoopThread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.loop.run(coro, timeout)

    def create(self, **limits: Any) -> SandboxRecord:
        return self.run(self.node.create(SandboxSpec(limits=Limits(**limits))))

    def sh(self, sandbox_id: str, script: str, **kw: Any) -> ExecResult:
        return self.run(self.node.exec(sandbox_id, ExecRequest(cmd=["/bin/sh", "-c", script], **kw)))


@pytest.fixture(scope="module", params=["local", "remote"])
def impl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Impl]:
    if request.param == "local":
        local = Node(tmp_path_factory.mktemp("local"))
        yield Impl("local", local.rt, local.loop)
        local.close()
        return
    a: Agent = request.getfixturevalue("agent")
    loop = LoopThread()
    remote = RemoteNode(a.url, a.credential(), a.ca)
    loop.run(remote.start())
    yield Impl("remote", remote, loop)
    for rec in remote.list():
        loop.run(remote.kill(rec.id))
    loop.run(remote.close())
    loop.stop()
