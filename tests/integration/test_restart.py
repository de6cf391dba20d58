"""Server restarts (clean and kill -9) keep every sandbox and file; rate limits are
per tenant."""

from __future__ import annotations

import signal

import pytest

from tests.integration.conftest import Server


@pytest.fixture()
def own_server(tmp_path):
    srv = Server(tmp_path / "data", pool_size=0, env={"CLOCHE_RATE_PER_S": "5", "CLOCHE_RATE_BURST": "10"})
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_restart_keeps_every_sandbox_and_file(own_server: Server, sig):
    """A clean stop (SIGTERM, SIGINT) hibernates the sandbox and exits 0; after kill -9
    the running sandbox is adopted as it was, its processes untouched."""
    _, key = own_server.tenant()
    with own_server.client(key) as c:
        sid = c.post("/v1/sandboxes", json={"name": "keeper"}).json()["id"]
        c.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/state"}, content=b"precious")
        c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "sleep 1000 > /dev/null 2>&1 &"})
    code = own_server.stop(sig)
    assert code == 0 or sig == signal.SIGKILL
    own_server.start()
    with own_server.client(key) as c:
        sb = c.get(f"/v1/sandboxes/{sid}").json()
        assert sb["state"] == ("running" if sig == signal.SIGKILL else "hibernated")
        assert c.get(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/state"}).content == b"precious"
        ps = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "ps -eo args"}).json()["stdout"]
        assert ("sleep 1000" in ps) == (sig == signal.SIGKILL)  # adopted after a crash; woken after a stop
        again = c.post("/v1/sandboxes", json={"name": "keeper"})
        assert again.status_code == 200 and again.json()["id"] == sid


def test_rate_limit_is_per_tenant(own_server: Server):
    _, noisy = own_server.tenant()
    _, quiet = own_server.tenant()
    with own_server.client(noisy) as n, own_server.client(quiet) as q:
        statuses = [n.get("/v1/sandboxes") for _ in range(30)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, "a burst past the limit must be throttled"
        assert int(limited[0].headers["Retry-After"]) >= 1
        assert limited[0].json()["error"]["code"] == "rate_limited"
        assert q.get("/v1/sandboxes").status_code == 200
