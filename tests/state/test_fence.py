"""Fencing tokens on state writes (cluster mode, PostgreSQL): once a newer claim of an
instance has written, a write carrying the older claim's token is rejected and leaves
nothing behind, through the engine and through a sandbox's state socket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from cloche.cluster.pgfence import check_token
from cloche.state import incontainer
from cloche.state.engine import Fence, Op, StaleFence
from cloche.state.postgres import PostgresEngine
from cloche.state.sandbox import SOCKET_NAME, SandboxStateSockets
from cloche.state.sqlite import SqliteEngine
from tests.state.conftest import pg_dsn


def run(body: Callable[[PostgresEngine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        engine = PostgresEngine(pg_dsn(), min_size=2, max_size=8)
        await engine.open()
        try:
            return await body(engine)
        finally:
            await engine.close()

    return asyncio.run(main())


def instance() -> str:
    return "sb" + uuid.uuid4().hex[:12]


def fence(sandbox_id: str, token: int) -> Fence:
    return Fence("sandbox", sandbox_id, token)


# The writes a stale instance may try, each against the state `seed` leaves behind.
STALE_WRITES: dict[str, Callable[[PostgresEngine, str, Fence], Awaitable[Any]]] = {
    "put": lambda e, t, f: e.kv_put(t, "ns", "k", b"stale", fence=f),
    "put-new-key": lambda e, t, f: e.kv_put(t, "ns", "fresh", b"stale", fence=f),
    "delete": lambda e, t, f: e.kv_delete(t, "ns", "k", fence=f),
    "append": lambda e, t, f: e.log_append(t, "ns", b"stale", fence=f),
    "trim": lambda e, t, f: e.log_trim(t, "ns", 2, fence=f),
    "batch": lambda e, t, f: e.batch(t, "ns", [Op("put", "k", b"stale"), Op("delete", "j")], fence=f),
}


async def seed(e: PostgresEngine, tenant: str) -> None:
    await e.kv_put(tenant, "ns", "k", b"before")
    await e.kv_put(tenant, "ns", "j", b"before")
    for i in range(3):
        await e.log_append(tenant, "ns", f"entry {i}".encode())


async def snapshot(e: PostgresEngine, tenant: str) -> tuple[Any, ...]:
    k, j, fresh = [await e.kv_get(tenant, "ns", key) for key in ("k", "j", "fresh")]
    log = await e.log_read(tenant, "ns")
    return (k and (k.value, k.version), j and (j.value, j.version), fresh,
            [(x.seq, x.data) for x in log.items], log.first_seq, log.last_seq)  # fmt: skip


def test_a_write_with_the_current_token_succeeds(tenant: str) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        assert await e.kv_put(tenant, "ns", "k", b"v", fence=fence(sb, 5)) == 1
        assert (await e.log_append(tenant, "ns", b"x", fence=fence(sb, 5))).seq == 1
        assert await e.kv_put(tenant, "ns", "k", b"v2", fence=fence(sb, 5)) == 2  # the same claim writes on
        assert (await e.kv_get(tenant, "ns", "k")).value == b"v2"

    run(body)


@pytest.mark.parametrize("write", list(STALE_WRITES))
def test_a_stale_write_is_rejected_and_writes_nothing(tenant: str, write: str) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        await seed(e, tenant)
        await e.kv_put(tenant, "ns", "k", b"old claim", fence=fence(sb, 5))
        await e.kv_put(tenant, "ns", "k", b"new claim", fence=fence(sb, 7))
        before = await snapshot(e, tenant)
        with pytest.raises(StaleFence) as stale:
            await STALE_WRITES[write](e, tenant, fence(sb, 5))
        assert (stale.value.status, stale.value.code) == (409, "stale_fence")
        assert f"sandbox/{sb}" in stale.value.message
        assert "token 5" in stale.value.message and "newest seen is 7" in stale.value.message
        assert await snapshot(e, tenant) == before
        # The new claim is not disturbed by the old one's attempt.
        assert await e.kv_put(tenant, "ns", "k", b"newer", fence=fence(sb, 7)) == before[0][1] + 1

    run(body)


def test_a_write_without_a_fence_always_succeeds(tenant: str) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        await seed(e, tenant)
        await e.kv_put(tenant, "ns", "other", b"new claim", fence=fence(sb, 7))
        assert await e.kv_put(tenant, "ns", "k", b"unfenced") == 2
        assert await e.kv_delete(tenant, "ns", "j") is True
        assert (await e.log_append(tenant, "ns", b"unfenced")).seq == 4
        assert await e.log_trim(tenant, "ns", 2) == 3
        assert (await e.batch(tenant, "ns", [Op("put", "k", b"batched")]))[0].version == 3

    run(body)


def test_a_claim_fences_the_old_holder_before_the_new_one_writes(tenant: str) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        await e.kv_put(tenant, "ns", "k", b"old claim", fence=fence(sb, 5))
        await e.advance_fence(fence(sb, 7))
        with pytest.raises(StaleFence):
            await e.kv_put(tenant, "ns", "k", b"stale", fence=fence(sb, 5))
        with pytest.raises(StaleFence):  # a claim older than the newest one is refused too
            await e.advance_fence(fence(sb, 6))
        assert (await e.kv_get(tenant, "ns", "k")).value == b"old claim"
        assert await e.kv_put(tenant, "ns", "k", b"new claim", fence=fence(sb, 7)) == 2

    run(body)


def test_a_stale_write_racing_the_new_claims_waits_and_is_rejected(tenant: str) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        await e.kv_put(tenant, "ns", "k", b"old claim", fence=fence(sb, 5))
        async with await psycopg.AsyncConnection.connect(pg_dsn()) as new_claim:
            # The new claim's write is in flight: its transaction has passed the check.
            await check_token(new_claim, "sandbox", sb, 7)
            stale = asyncio.create_task(e.kv_put(tenant, "ns", "k", b"stale", fence=fence(sb, 5)))
            await asyncio.sleep(0.5)
            assert not stale.done()  # it waits for the new claim's transaction
            await new_claim.commit()
        with pytest.raises(StaleFence):
            await stale
        assert (await e.kv_get(tenant, "ns", "k")).value == b"old claim"

    run(body)


def test_racing_instances_never_write_after_the_newer_one(tenant: str) -> None:
    """Two claims of one instance append at once, several writes each in flight: the log
    holds every write of token 7, and no write of token 5 after the first of token 7."""

    async def body(e: PostgresEngine) -> None:
        sb = instance()
        old_writes: list[int] = []

        async def old_writer(w: int) -> None:
            for i in range(1000):
                try:
                    old_writes.append((await e.log_append(tenant, "ns", f"5:{w}:{i}".encode(), fence=fence(sb, 5))).seq)
                except StaleFence:
                    return
            raise AssertionError("the old claim was never fenced")

        async def new_writer(w: int) -> None:
            while len(old_writes) < 10:
                await asyncio.sleep(0.005)
            for i in range(20):
                await e.log_append(tenant, "ns", f"7:{w}:{i}".encode(), fence=fence(sb, 7))

        await asyncio.gather(*(old_writer(w) for w in range(4)), *(new_writer(w) for w in range(3)))
        log = await e.log_read(tenant, "ns", limit=1000)
        owners = [x.data.decode()[0] for x in log.items]
        assert owners.count("7") == 60 and owners.count("5") == len(old_writes) >= 10
        assert "5" not in owners[owners.index("7"):]  # fmt: skip

    run(body)


def test_the_sandbox_socket_answers_a_stale_write_with_stale_fence(tenant: str, tmp_path: Path) -> None:
    async def body(e: PostgresEngine) -> None:
        sb = instance()
        fences = {sb: fence(sb, 5)}
        sockets = SandboxStateSockets(e, {sb: tenant}.get, fences.get)
        host = tmp_path / "host"
        host.mkdir()
        await sockets.sandbox_started(SimpleNamespace(id=sb), host)
        client = incontainer.StateClient(path=str(host / SOCKET_NAME))
        try:
            assert await asyncio.to_thread(client.put, "k", b"mine") == 1
            assert await asyncio.to_thread(client.append, b"entry") == 1
            # The sandbox is claimed again elsewhere, and the new claim writes.
            await e.kv_put(tenant, sb, "elsewhere", b"new claim", fence=fence(sb, 7))
            for write in (lambda: client.put("k", b"stale"), lambda: client.delete("k"),
                          lambda: client.append(b"stale"), lambda: client.trim(1)):  # fmt: skip
                with pytest.raises(incontainer.StateError) as err:
                    await asyncio.to_thread(write)
                assert err.value.code == "stale_fence" and "newest seen is 7" in err.value.message
            assert await asyncio.to_thread(client.get, "k") == (b"mine", 1)  # reads still answer
            assert [d for _, d in await asyncio.to_thread(client.read)] == [b"entry"]
            fences[sb] = fence(sb, 7)  # the fence is asked on every write
            assert await asyncio.to_thread(client.put, "k", b"current") == 2
        finally:
            client.close()
            await sockets.close()

    run(body)


def test_sqlite_accepts_fences_and_ignores_them(tenant: str, tmp_path: Path) -> None:
    """One machine has no other node to claim an instance again: `cloche up` never fences."""

    async def main() -> None:
        e = SqliteEngine(tmp_path / "state.db")
        await e.open()
        try:
            sb = instance()
            assert await e.kv_put(tenant, "ns", "k", b"new", fence=fence(sb, 7)) == 1
            assert await e.kv_put(tenant, "ns", "k", b"old", fence=fence(sb, 5)) == 2
            assert (await e.log_append(tenant, "ns", b"old", fence=fence(sb, 5))).seq == 1
            assert await e.log_trim(tenant, "ns", 1, fence=fence(sb, 5)) == 2
            assert await e.kv_delete(tenant, "ns", "k", fence=fence(sb, 5)) is True
            assert (await e.batch(tenant, "ns", [Op("put", "k", b"b")], fence=fence(sb, 5)))[0].version == 4
            await e.advance_fence(fence(sb, 3))
        finally:
            await e.close()

    asyncio.run(main())
