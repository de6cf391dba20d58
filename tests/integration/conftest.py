"""A real `cloche up` subprocess on a free loopback port, per test module; the API view
of it (`Api`) is shared with tests/clustermode, which runs these suites on a cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloche.cluster.local.process import free_ports
from cloche.tlsdefault import default_tls
from tests.cli_zygote import SERVER_ZYGOTE, Forked
from tests.conftest import Node


def crash_rounds(default: int) -> int:
    """How many kill -9 rounds a crash test runs: `default` in `make test` (each round
    restarts a server, ~2.5 s of CPU), CLOCHE_CRASH_KILLS for a longer soak."""
    return int(os.environ.get("CLOCHE_CRASH_KILLS", default))


def free_port() -> int:
    """A loopback port for a server a test starts (outside the ephemeral range: see free_ports)."""
    return free_ports(1)[0]


class Api:
    """What the suites use of a server: its address, admin key, clients and fresh tenants."""

    url: str
    admin_key: str

    @property
    def sandbox_url(self) -> str:
        """Where the E2B SDKs send a sandbox's envd calls (E2B_SANDBOX_URL)."""
        return self.url

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, verify=default_tls(),
                            headers={"Authorization": f"Bearer {key or self.admin_key}"})  # fmt: skip

    def tenant(self, **quotas: object) -> tuple[str, str]:
        with self.client() as c:
            r = c.post("/v1/tenants", json={"name": f"t-{uuid.uuid4().hex[:10]}", **quotas})
            r.raise_for_status()
            body = r.json()
            return body["id"], body["api_key"]


class Server(Api):
    def __init__(self, data_dir: Path, pool_size: int = 1, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pool_size = pool_size
        self.proc: Forked | None = None
        self.log = data_dir / "server.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = ["up", "--data-dir", str(self.data_dir), "--port", str(self.port), "--pool-size", str(self.pool_size)]
        with open(self.log, "ab") as logf:  # forked from a zygote that imported the server already
            self.proc = SERVER_ZYGOTE.spawn(args, env=self.env, stdout=logf.fileno(), stderr=logf.fileno(), setsid=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloche up exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=default_tls()).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("cloche up did not become healthy")
        self.admin_key = (self.data_dir / "admin-key").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def wipe(self) -> None:
        """Kill every sandbox this server's node holds, whoever owns it."""
        node = Node(self.data_dir)
        node.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server") / "data")
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


@pytest.fixture()
def tenant_client(server: Server) -> Iterator[httpx.Client]:
    _, key = server.tenant()
    with server.client(key) as c:
        yield c


os.environ.setdefault("NO_COLOR", "1")
