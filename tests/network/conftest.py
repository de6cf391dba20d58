"""A real `cloche up` whose sandboxes reach only the suite's fake internet, and helpers
to run probes inside a sandbox (connects, DNS lookups, transfers) and read the result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server

PROBE = r"""
import errno, json, socket, sys, time
out = []
for op in json.loads(sys.argv[1]):
    t = time.monotonic()
    try:
        if op[0] == "connect":
            s = socket.create_connection((op[1], op[2]), timeout=op[3] if len(op) > 3 else 5)
            s.close()
            r = "connected"
        elif op[0] == "resolve":
            r = sorted({a[4][0] for a in socket.getaddrinfo(op[1], 80, socket.AF_INET, socket.SOCK_STREAM)})
        elif op[0] == "http":
            s = socket.create_connection((op[1], 80), timeout=5)
            s.sendall(b"GET / HTTP/1.0\r\nHost: " + op[1].encode() + b"\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            r = json.loads(data.split(b"\r\n\r\n", 1)[1])
    except OSError as e:
        r = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
    out.append([r, round(time.monotonic() - t, 3)])
print(json.dumps(out))
"""


def exec_sh(client: httpx.Client, sandbox_id: str, cmd: str | list[str], timeout_s: float = 60) -> dict[str, Any]:
    r = client.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": cmd, "timeout_s": timeout_s})
    assert r.status_code == 200, r.text
    return r.json()


def probe(client: httpx.Client, sandbox_id: str, *ops: list[Any]) -> list[tuple[Any, float]]:
    """Run each op inside the sandbox: ["connect", host, port], ["resolve", name], ["http", host]."""
    out = exec_sh(client, sandbox_id, ["python3", "-c", PROBE, json.dumps(list(ops))])
    assert out["exit_code"] == 0, out
    return [tuple(x) for x in json.loads(out["stdout"])]


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module that sets ISOLATION gets a server whose default tier (and pool) is that."""
    env = {"CLOCHE_ISOLATION": getattr(request.module, "ISOLATION", "runc")}
    srv = Server(tmp_path_factory.mktemp("netserver") / "data", pool_size=1, env=env)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    _, key = server.tenant()
    with server.client(key) as c:
        yield c


def create(client: httpx.Client, network: Any = None, **body: Any) -> str:
    if network is not None:
        body["network"] = network
    r = client.post("/v1/sandboxes", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]
