"""The official E2B SDKs, unchanged, against a real `cloche up` (one per test module).

E2B_API_URL and E2B_SANDBOX_URL point at cloche's own port and E2B_API_KEY is a
cloche tenant's key, set for the module's duration, which is all a user does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import Server


@dataclass
class E2bEnv:
    server: Server
    tenant_id: str
    key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module that sets ISOLATION gets a server whose default tier (and pool) is that."""
    env = {"CLOCHE_ISOLATION": getattr(request.module, "ISOLATION", "runc")}
    srv = Server(tmp_path_factory.mktemp("e2b-server") / "data", pool_size=1, env=env)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


@pytest.fixture(scope="module")
def e2b(server: Server) -> Iterator[E2bEnv]:
    tenant_id, key = server.tenant()
    names = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN", "E2B_DEBUG", "E2B_ACCESS_TOKEN")
    saved = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ.pop(n, None)
    os.environ.update({"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.sandbox_url, "E2B_API_KEY": key})
    try:
        yield E2bEnv(server, tenant_id, key)
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value
