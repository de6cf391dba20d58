"""Fencing in PostgreSQL: a write carrying an older instance's token is rejected, even
when the old and the new instance write at the same time."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from cloche.cluster.pgfence import StaleFencingToken, check_token, create_table
from tests.state.conftest import pg_dsn


async def connect() -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(pg_dsn())


async def write(app: str, token: int, value: str) -> None:
    """One instance's write: the token check and the write in one transaction."""
    async with await connect() as conn, conn.transaction():
        await check_token(conn, app, "k", token)
        await conn.execute("INSERT INTO fence_test_writes (app, value) VALUES (%s, %s)", (app, value))


async def writes(app: str) -> list[str]:
    async with await connect() as conn:
        cur = await conn.execute("SELECT value FROM fence_test_writes WHERE app = %s ORDER BY id", (app,))
        return [r[0] for r in await cur.fetchall()]


async def setup() -> str:
    async with await connect() as conn:
        await create_table(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS fence_test_writes (id BIGSERIAL PRIMARY KEY, app TEXT, value TEXT)"
        )
        await conn.commit()
    return "app-" + uuid.uuid4().hex[:12]


def test_a_stale_token_is_rejected() -> None:
    async def main() -> None:
        app = await setup()
        await write(app, 7, "old instance")
        await write(app, 7, "old instance again")  # the same token may write on
        await write(app, 12, "new instance")
        with pytest.raises(StaleFencingToken) as stale:
            await write(app, 7, "old instance, after the new one started")
        assert (stale.value.token, stale.value.newest) == (7, 12)
        assert await writes(app) == ["old instance", "old instance again", "new instance"]

    asyncio.run(main())


def test_a_concurrent_stale_write_waits_and_is_rejected() -> None:
    async def main() -> None:
        app = await setup()
        await write(app, 5, "old")
        async with await connect() as new, new.transaction():
            await check_token(new, app, "k", 9)  # the new instance's write is in flight
            old = asyncio.create_task(write(app, 5, "old, racing"))
            await asyncio.sleep(0.3)
            assert not old.done(), "the old instance's write waits for the new one's transaction"
            await new.execute("INSERT INTO fence_test_writes (app, value) VALUES (%s, 'new')", (app,))
        with pytest.raises(StaleFencingToken):
            await old
        assert await writes(app) == ["old", "new"]

    asyncio.run(main())
