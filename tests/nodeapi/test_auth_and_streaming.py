"""The node API's guard and its streaming, against a real `cloche node` subprocess:
no or a wrong credential is refused (only `GET /healthz` is open), a client trusting another CA fails the TLS
handshake, a rotated credential works while the old one dies after its grace, and a
file far larger than the node's memory growth bound crosses it."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from cloche.node.spec import SandboxSpec
from cloche.nodeapi import tls
from cloche.nodeapi.client import RemoteNode
from tests.conftest import LoopThread
from tests.nodeapi.conftest import Agent

MB = 1 << 20


def test_no_or_wrong_credential_is_401(agent: Agent) -> None:
    with agent.http(None) as c:
        assert c.get("/v1/sandboxes").status_code == 401
    with agent.http("cln_wrong") as c:
        assert c.get("/v1/sandboxes").status_code == 401
    with agent.http(agent.credential()) as c:
        assert c.get("/v1/sandboxes").status_code == 200


def test_only_healthz_answers_without_a_credential(agent: Agent) -> None:
    with agent.http(None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}  # what other nodes time (nodeapi/probes.py)
        assert c.get("/healthz/../v1/info").status_code in (401, 404)
        assert c.get("/v1/info").status_code == 401


def test_a_client_of_another_ca_fails_tls(agent: Agent, tmp_path: os.PathLike[str]) -> None:
    other = tls.ensure_ca(tmp_path / "other-cluster")  # type: ignore[operator]
    with httpx.Client(verify=tls.client_context(other)) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        c.get(f"{agent.url}/v1/info", headers={"Authorization": f"Bearer {agent.credential()}"})


def test_rotation_keeps_the_old_credential_for_its_grace(agent: Agent) -> None:
    old = agent.credential()
    rotated = time.monotonic()
    agent.cli("rotate", "--data-dir", str(agent.data_dir), "--grace-s", "8")  # room for a slow, loaded host
    new = agent.credential()
    assert new != old
    for credential in (new, old):
        with agent.http(credential) as c:
            assert c.get("/v1/info").status_code == 200
    with agent.http(old) as c:  # refused once the grace is over, and not long after
        while c.get("/v1/info").status_code == 200:
            assert time.monotonic() - rotated < 8 + 10, "the old credential outlived its grace"
            time.sleep(0.2)
    assert time.monotonic() - rotated >= 8
    with agent.http(new) as c:
        assert c.get("/v1/info").status_code == 200


def test_a_big_file_streams_through_the_node(agent: Agent) -> None:
    """256 MiB up and down; the node's peak RSS grows by far less than the file."""
    size, seed = 256 * MB, os.urandom(MB)
    loop = LoopThread()
    node = RemoteNode(agent.url, agent.credential(), agent.ca)
    loop.run(node.start())

    async def source() -> AsyncIterator[bytes]:
        for i in range(size // MB):
            yield seed[i % 7 :] + seed[: i % 7]

    expected = hashlib.sha256()
    for i in range(size // MB):
        expected.update(seed[i % 7 :] + seed[: i % 7])

    async def down(sandbox_id: str) -> tuple[str, int]:
        digest, largest = hashlib.sha256(), 0
        async for chunk in node.files(sandbox_id).read("/workspace/big"):
            digest.update(chunk)
            largest = max(largest, len(chunk))
        return digest.hexdigest(), largest

    try:
        rec = loop.run(node.create(SandboxSpec()))
        before = agent.rss_peak()
        assert loop.run(node.files(rec.id).write("/workspace/big", source()), 300) == size
        digest, largest = loop.run(down(rec.id), 300)
        growth = agent.rss_peak() - before
        print(f"node peak RSS growth moving {size >> 20} MiB each way: {growth >> 20} MiB")
        assert digest == expected.hexdigest() and largest <= MB
        assert growth < 64 * MB, f"the node's peak RSS grew {growth >> 20} MiB for a {size >> 20} MiB file"
        loop.run(node.kill(rec.id))
    finally:
        loop.run(node.close())
        loop.stop()
