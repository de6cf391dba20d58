"""SQLite's group commit: concurrent writes share one transaction and one fsync on the
writer thread. What that must never cost: a failing request must not fail its group's
others, large and small writes must commit together intact, another connection's write
lock must not hold the event loop up, and the expiry sweep must run with nobody writing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from cloche.state import sqlite_writer
from cloche.state.engine import Conflict, Op
from cloche.state.sqlite import SqliteEngine


def run(path: Path, body) -> None:
    async def main() -> None:
        e = SqliteEngine(path)
        await e.open()
        try:
            await body(e)
        finally:
            await e.close()

    asyncio.run(main())


def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(tmp_path):
    async def body(e: SqliteEngine) -> None:
        await e.kv_put("t", "ns", "warm", b"x")
        before = e.stats.commits
        bad = e.batch("t", "ns", [Op("put", "doomed", b"x"), Op("check", "doomed", if_match=9)])
        results = await asyncio.gather(*(e.kv_put("t", "ns", f"k{i}", b"v") for i in range(40)), bad,
                                       *(e.log_append("t", "ns", b"entry") for _ in range(10)),
                                       return_exceptions=True)  # fmt: skip
        assert results[:40] == [1] * 40
        assert isinstance(results[40], Conflict)
        assert sorted(a.seq for a in results[41:]) == list(range(1, 11))
        assert e.stats.commits - before <= 3  # 51 writes, one turn of the loop: one group
        assert await e.kv_get("t", "ns", "doomed") is None
        assert (await e.kv_get("t", "ns", "k39")).value == b"v"

    run(tmp_path / "state.db", body)


def test_another_connections_write_lock_does_not_hold_the_loop_up(tmp_path):
    path = tmp_path / "state.db"

    async def body(e: SqliteEngine) -> None:
        await e.kv_put("t", "ns", "k", b"before")
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held by someone else
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        put = asyncio.ensure_future(e.kv_put("t", "ns", "k", b"after"))
        await asyncio.sleep(0.3)
        assert not put.done() and ticks >= 10  # the put waits, the loop does not
        assert (await e.kv_get("t", "ns", "k")).value == b"before"  # reads do not wait either
        other.execute("COMMIT")
        other.close()
        assert await put == 2
        t.cancel()
        assert (await e.kv_get("t", "ns", "k")).value == b"after"

    run(path, body)


def test_expired_values_are_swept_with_nobody_writing(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    monkeypatch.setattr(sqlite_writer, "EXPIRY_SWEEP_S", 0.2)

    def stored(key: str) -> tuple[bytes | None, int]:
        with sqlite3.connect(str(path)) as db:
            return db.execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()

    async def body(e: SqliteEngine) -> None:
        await e.kv_put("t", "ns", "brief", b"x" * 1000, ttl_s=0.05)
        await e.kv_put("t", "ns", "kept", b"y")
        deadline = time.monotonic() + 5
        while stored("brief")[0] is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stored("brief") == (None, 1)  # a tombstone: its space freed, its version kept
        assert stored("kept") == (b"y", 1)

    run(path, body)


def test_large_and_small_writes_commit_together_intact(tmp_path):
    """Megabyte writes in the same group as small ones commit together, intact, and a
    failing large batch still rolls back alone."""
    big = bytes(range(256)) * 4096  # 1 MiB
    half = big[: 512 << 10]

    async def body(e: SqliteEngine) -> None:
        await e.kv_put("t", "ns", "warm", b"x")
        doomed = e.batch("t", "ns", [Op("put", "d1", half), Op("put", "d2", half), Op("check", "d1", if_match=5)])
        results = await asyncio.gather(
            e.kv_put("t", "ns", "big", big),
            e.batch("t", "ns", [Op("put", f"b{i}", half) for i in range(4)]),
            e.log_append("t", "ns", big[:200_000]),
            doomed,
            *(e.kv_put("t", "ns", f"small{i}", b"s") for i in range(20)),
            return_exceptions=True,
        )
        assert results[0] == 1 and [r.version for r in results[1]] == [1] * 4 and results[2].seq == 1
        assert isinstance(results[3], Conflict)
        assert results[4:] == [1] * 20
        assert (await e.kv_get("t", "ns", "big")).value == big
        assert (await e.kv_get("t", "ns", "b3")).value == half
        assert (await e.log_read("t", "ns")).items[0].data == big[:200_000]
        assert await e.kv_get("t", "ns", "d1") is None and await e.kv_get("t", "ns", "d2") is None

    run(tmp_path / "state.db", body)
