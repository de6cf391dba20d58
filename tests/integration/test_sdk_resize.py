"""Live resize (`PATCH /v1/sandboxes/{id}`), `wait_s`/`region` on create and `placement`,
through the SDK and the CLI against a real `cloche up`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from cloche import AsyncClient, Client, Conflict, InvalidRequest
from tests.cli_zygote import run_cli
from tests.integration.conftest import Server


@pytest.fixture(scope="module")
def tenant(server: Server) -> tuple[str, str]:
    # Room in the quota to ask for more memory than the node has (a 409, not a 429).
    return server.tenant(max_memory_mb=1 << 20, max_cpu=1000)


@pytest.fixture(scope="module")
def client(server: Server, tenant: tuple[str, str]):
    with Client(server.url, tenant[1]) as c:
        yield c


def cli(server: Server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLOCHE_URL", "CLOCHE_API_KEY", "COLUMNS")}
    env.update(CLOCHE_URL=server.url, CLOCHE_API_KEY=key, NO_COLOR="1")
    return run_cli(args, text=True, env=env, timeout=180)


def test_create_with_wait_and_region_reports_placement(client: Client):
    with client.sandboxes.create(memory_mb=256, wait_s=5, region="eu-west") as sbx:
        assert sbx.state == "running"
        assert sbx.info.memory_mb == 256
        assert isinstance(sbx.info.placement, dict) and sbx.info.placement
        assert isinstance(client.sandboxes.get(sbx.id).info.placement, dict)


def test_create_rejects_out_of_range_wait(client: Client):
    with pytest.raises(InvalidRequest):
        client.sandboxes.create(wait_s=-1)


def test_resize_memory_up_and_down(client: Client):
    with client.sandboxes.create(memory_mb=256) as sbx:
        grown = sbx.resize(memory_mb=512)
        assert grown is sbx and sbx.info.memory_mb == 512
        assert client.sandboxes.get(sbx.id).info.memory_mb == 512
        assert sbx.exec("echo still here").stdout == "still here\n"  # no restart

        sbx.resize(memory_mb=128, cpu=0.5)
        info = client.sandboxes.get(sbx.id).info
        assert (info.memory_mb, info.cpu, info.state) == (128, 0.5, "running")
        assert sbx.exec("true").ok


def test_resize_pids_only_keeps_cpu_and_memory(client: Client):
    with client.sandboxes.create(memory_mb=256, cpu=1) as sbx:
        sbx.resize(pids=256)
        info = client.sandboxes.get(sbx.id).info
        assert (info.memory_mb, info.cpu) == (256, 1)


def test_resize_beyond_the_node_is_a_conflict(client: Client):
    with client.sandboxes.create(memory_mb=256) as sbx:
        with pytest.raises(Conflict) as info:
            sbx.resize(memory_mb=256 * 1024)
        assert info.value.status == 409
        with pytest.raises(Conflict):
            sbx.resize(memory_mb=256 * 1024, allow_move=True)  # one node: nowhere to move
        assert client.sandboxes.get(sbx.id).info.memory_mb == 256


def test_resize_out_of_range_is_invalid(client: Client):
    with client.sandboxes.create() as sbx, pytest.raises(InvalidRequest):
        sbx.resize(memory_mb=1)


def test_async_resize(server: Server, tenant: tuple[str, str]):
    async def main() -> tuple[int | None, int | None]:
        async with AsyncClient(server.url, tenant[1]) as client:
            sbx = await client.sandboxes.create(memory_mb=256, wait_s=5, region="us-east")
            try:
                await sbx.resize(memory_mb=384)
                after = (await client.sandboxes.get(sbx.id)).info.memory_mb
                return sbx.info.memory_mb, after
            finally:
                await sbx.kill(missing_ok=True)

    assert asyncio.run(main()) == (384, 384)


def test_cli_create_with_wait_and_region_then_resize(server: Server, tenant: tuple[str, str], client: Client):
    key = tenant[1]
    created = cli(server, key, "sandbox", "create", "--memory-mb", "256", "--wait", "5", "--region", "eu-west")
    assert created.returncode == 0, created.stderr
    sandbox_id = created.stdout.strip()
    try:
        resized = cli(server, key, "sandbox", "resize", sandbox_id, "--memory-mb", "512", "--cpu", "1.5")
        assert resized.returncode == 0, resized.stderr
        assert sandbox_id in resized.stdout and "memory=512 MiB" in resized.stdout
        info = client.sandboxes.get(sandbox_id).info
        assert (info.memory_mb, info.cpu) == (512, 1.5)

        as_json = cli(server, key, "sandbox", "resize", sandbox_id, "--memory-mb", "192", "--pids", "128", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["memory_mb"] == 192
        assert client.sandboxes.get(sandbox_id).info.memory_mb == 192

        too_big = cli(server, key, "sandbox", "resize", sandbox_id, "--memory-mb", str(256 * 1024), "--allow-move")
        assert too_big.returncode == 1
        assert "error:" in too_big.stderr

        nothing = cli(server, key, "sandbox", "resize", sandbox_id)
        assert nothing.returncode == 2
    finally:
        client.sandboxes.get(sandbox_id).kill(missing_ok=True)
