"""A real `cloche up` process on a throwaway data directory, for API-level benchmarks.
close() stops it and removes every sandbox it made, so nothing is left behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import OWN_NODE_KEYS

from cloche.tlsdefault import default_tls

DATA_PARENT = Path(os.environ.get("BENCH_DATA_DIR", "/var/tmp"))
UNLIMITED = {"CLOCHE_RATE_PER_S": "10000000", "CLOCHE_RATE_BURST": "10000000", "CLOCHE_MAX_SANDBOXES": "100000",
             "CLOCHE_MAX_CPU": "100000", "CLOCHE_MAX_MEMORY_MB": "100000000"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchServer:
    def __init__(self, name: str, pool_size: int = 1, env: dict[str, str] | None = None) -> None:
        import httpx

        from cloche.node.runtime import node_key

        DATA_PARENT.mkdir(parents=True, exist_ok=True)
        self.data = Path(tempfile.mkdtemp(prefix=f"cloche-bench-{name}-", dir=DATA_PARENT))
        OWN_NODE_KEYS.add(node_key(self.data))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.data / "server.log", "wb")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloche.cli", "up", "--data-dir", str(self.data), "--port", str(self.port),
             "--pool-size", str(pool_size)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **UNLIMITED, **(env or {})},
        )  # fmt: skip
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("cloche up exited: " + (self.data / "server.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=default_tls()).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("cloche up did not become healthy")
            time.sleep(0.05)
        self.key = (self.data / "admin-key").read_text().strip()
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def pss_kib(self) -> int:
        """Proportional set size of the server process."""
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        return 0

    def close(self) -> None:
        from cloche.config import INIT_BINARY
        from cloche.node.runtime import NodeConfig, NodeRuntime

        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

        async def wipe() -> None:
            rt = NodeRuntime(NodeConfig(data_dir=self.data, init_binary=INIT_BINARY))
            await rt.start()
            sem = asyncio.Semaphore(8)

            async def kill(sid: str) -> None:
                async with sem:
                    await rt.kill(sid)

            await asyncio.gather(*(kill(r.id) for r in rt.all_records()))
            await rt.close()

        try:
            asyncio.run(wipe())
        finally:
            shutil.rmtree(self.data, ignore_errors=True)
