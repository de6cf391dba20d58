"""One conformance suite, run against both state engines (see conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cloche.state.engine import Conflict, InvalidArgument, InvalidName, Op, StateLimits, TooLarge
from cloche.state.sqlite import SqliteEngine


def test_versions_increase_and_survive_delete(backend, tenant):
    async def body(e):
        assert await e.kv_put(tenant, "ns", "a", b"one") == 1
        assert await e.kv_put(tenant, "ns", "a", b"two") == 2
        item = await e.kv_get(tenant, "ns", "a")
        assert (item.value, item.version) == (b"two", 2)
        assert await e.kv_delete(tenant, "ns", "a") is True
        assert await e.kv_get(tenant, "ns", "a") is None
        assert await e.kv_delete(tenant, "ns", "a") is False
        # A key written again continues from its old version: a stale If-Match never matches.
        assert await e.kv_put(tenant, "ns", "a", b"three") == 4
        assert await e.kv_get(tenant, "ns", "missing") is None
        assert await e.kv_get(tenant, "no-such-ns", "a") is None
        assert await e.kv_put(tenant, "ns", "empty", b"") == 1
        assert (await e.kv_get(tenant, "ns", "empty")).value == b""

    backend.run(body)


def test_plain_puts_continue_the_version_whatever_wrote_the_key_before(backend, tenant):
    """A plain put after a delete, a conditional put, a committed or rolled-back batch or an
    expiry gives exactly the next version (SQLite's writer remembers versions as hints)."""

    async def body(e):
        assert [await e.kv_put(tenant, "ns", "k", b"x") for _ in range(3)] == [1, 2, 3]
        assert await e.kv_delete(tenant, "ns", "k") is True  # 4, a tombstone
        assert await e.kv_put(tenant, "ns", "k", b"x") == 5
        assert await e.kv_put(tenant, "ns", "k", b"x", if_match=5) == 6
        assert await e.kv_put(tenant, "ns", "k", b"x") == 7
        await e.batch(tenant, "ns", [Op("put", "k", b"b"), Op("put", "k", b"b")])  # 8, 9
        assert await e.kv_put(tenant, "ns", "k", b"x") == 10
        with pytest.raises(Conflict):  # rolled back: k stays at 10
            await e.batch(tenant, "ns", [Op("put", "k", b"lost"), Op("check", "k", if_match=1)])
        assert await e.kv_put(tenant, "ns", "k", b"x") == 11
        assert await e.kv_put(tenant, "ns", "k", b"short", ttl_s=0.05) == 12
        await asyncio.sleep(0.1)
        assert await e.kv_get(tenant, "ns", "k") is None
        assert await e.kv_put(tenant, "ns", "k", b"x") == 13
        item = await e.kv_get(tenant, "ns", "k")
        assert (item.value, item.version) == (b"x", 13)

    backend.run(body)


def test_a_wrong_version_hint_changes_nothing(tmp_path, tenant):
    """SQLite's writer checks its remembered version against the row; a wrong one falls back."""

    async def body():
        e = SqliteEngine(tmp_path / "state.db")
        await e.open()
        try:
            assert await e.kv_put(tenant, "ns", "k", b"one") == 1
            hints = e._writes.known_versions
            ((nid, key),) = hints
            for wrong in (7, 0, 1):  # ahead, behind, and the version just overwritten below
                hints[(nid, key)] = wrong
                version = await e.kv_put(tenant, "ns", "k", b"x")
                assert (await e.kv_get(tenant, "ns", "k")).version == version
            assert version == 4
        finally:
            await e.close()

    asyncio.run(body())


def test_a_failed_batch_in_a_new_namespace_leaves_no_namespace_behind(backend, tenant):
    """The namespace a failed batch created is rolled back with it: the next namespace made
    (another tenant's here) is not mixed up with it."""
    other = tenant + "_other"

    async def body(e):
        with pytest.raises(Conflict):
            await e.batch(tenant, "fresh", [Op("put", "a", b"mine"), Op("check", "a", if_match=7)])
        assert await e.kv_put(other, "theirs", "a", b"theirs") == 1
        assert await e.kv_put(tenant, "fresh", "b", b"mine") == 1
        assert await e.kv_get(tenant, "fresh", "a") is None
        assert (await e.kv_get(other, "theirs", "a")).value == b"theirs"
        assert [i.key for i in (await e.kv_list(other, "theirs")).items] == ["a"]
        assert [i.key for i in (await e.kv_list(tenant, "fresh")).items] == ["b"]
        assert (await e.log_append(tenant, "fresh", b"entry")).seq == 1

    backend.run(body)


def test_conditional_writes(backend, tenant):
    async def body(e):
        assert await e.kv_put(tenant, "ns", "k", b"v1", if_none_match=True) == 1
        with pytest.raises(Conflict) as ei:
            await e.kv_put(tenant, "ns", "k", b"x", if_none_match=True)
        assert ei.value.current_version == 1 and ei.value.status == 412
        assert await e.kv_put(tenant, "ns", "k", b"v2", if_match=1) == 2
        with pytest.raises(Conflict) as ei:
            await e.kv_put(tenant, "ns", "k", b"x", if_match=1)
        assert ei.value.current_version == 2
        with pytest.raises(Conflict) as ei:
            await e.kv_put(tenant, "ns", "nope", b"x", if_match=1)
        assert ei.value.current_version is None
        with pytest.raises(Conflict):
            await e.kv_put(tenant, "other-ns", "nope", b"x", if_match=1)
        with pytest.raises(Conflict):
            await e.kv_delete(tenant, "ns", "k", if_match=1)
        item = await e.kv_get(tenant, "ns", "k")
        assert (item.value, item.version) == (b"v2", 2)  # failed writes changed nothing
        assert await e.kv_delete(tenant, "ns", "k", if_match=2) is True
        assert await e.kv_put(tenant, "ns", "k", b"v4", if_none_match=True) == 4
        with pytest.raises(InvalidArgument):
            await e.kv_put(tenant, "ns", "k", b"x", if_match=4, if_none_match=True)
        for bad in (0, -1, True, "3"):
            with pytest.raises(InvalidArgument):
                await e.kv_put(tenant, "ns", "k", b"x", if_match=bad)
        assert (await e.kv_get(tenant, "ns", "k")).version == 4

    backend.run(body)


def test_batch_all_or_nothing(backend, tenant):
    async def body(e):
        await e.kv_put(tenant, "ns", "c", b"c1")
        res = await e.batch(tenant, "ns", [
            Op("put", "a", b"a1", if_none_match=True), Op("put", "b", b"b1"),
            Op("check", "c", if_match=1), Op("check", "zzz", if_none_match=True),
        ])  # fmt: skip
        assert [(r.op, r.key, r.version) for r in res] == [("put", "a", 1), ("put", "b", 1), ("check", "c", 1),
                                                            ("check", "zzz", None)]  # fmt: skip
        with pytest.raises(Conflict) as ei:
            await e.batch(tenant, "ns", [Op("put", "a", b"a2"), Op("delete", "b"), Op("put", "new", b"n"),
                                         Op("check", "c", if_match=7)])  # fmt: skip
        assert ei.value.index == 3 and ei.value.current_version == 1
        assert (await e.kv_get(tenant, "ns", "a")).value == b"a1"
        assert (await e.kv_get(tenant, "ns", "b")).value == b"b1"
        assert await e.kv_get(tenant, "ns", "new") is None
        with pytest.raises(Conflict) as ei:
            await e.batch(tenant, "ns", [Op("delete", "b"), Op("put", "a", b"x", if_none_match=True)])
        assert ei.value.index == 1
        assert (await e.kv_get(tenant, "ns", "b")).version == 1
        # ops see the earlier ops of their batch
        res = await e.batch(tenant, "ns", [
            Op("put", "d", b"1", if_none_match=True), Op("put", "d", b"2", if_match=1),
            Op("delete", "d", if_match=2), Op("check", "d", if_none_match=True),
        ])  # fmt: skip
        assert [r.version for r in res] == [1, 2, 3, None]
        with pytest.raises(InvalidArgument):
            await e.batch(tenant, "ns", [])
        with pytest.raises(InvalidArgument):
            await e.batch(tenant, "ns", [Op("put", "k", b"")] * 1000)
        with pytest.raises(InvalidName):
            await e.batch(tenant, "ns", [Op("put", "ok", b""), Op("put", "bad key", b"")])
        assert await e.kv_get(tenant, "ns", "ok") is None

    backend.run(body)


def test_ttl_expiry(backend, tenant):
    async def body(e):
        assert await e.kv_put(tenant, "ns", "t", b"soon gone", ttl_s=0.4) == 1
        await e.kv_put(tenant, "ns", "keep", b"stays")
        assert (await e.kv_get(tenant, "ns", "t")).expires_at is not None
        assert [i.key for i in (await e.kv_list(tenant, "ns")).items] == ["keep", "t"]
        await asyncio.sleep(0.6)
        assert await e.kv_get(tenant, "ns", "t") is None
        assert [i.key for i in (await e.kv_list(tenant, "ns")).items] == ["keep"]
        with pytest.raises(Conflict):
            await e.kv_put(tenant, "ns", "t", b"x", if_match=1)
        assert await e.kv_delete(tenant, "ns", "t") is False
        assert await e.kv_put(tenant, "ns", "t", b"back", if_none_match=True) == 2
        assert (await e.kv_get(tenant, "ns", "t")).expires_at is None
        with pytest.raises(InvalidArgument):
            await e.kv_put(tenant, "ns", "t", b"x", ttl_s=-1)

    backend.run(body)


def test_list_prefix_pagination(backend, tenant):
    async def body(e):
        keys = [f"users/{i:03d}" for i in range(25)] + ["users", "usersX", "app/config", "z"]
        for k in keys:
            await e.kv_put(tenant, "ns", k, k.encode())
        await e.kv_delete(tenant, "ns", "users/007")
        seen, cursor, pages = [], None, 0
        while True:
            page = await e.kv_list(tenant, "ns", prefix="users/", cursor=cursor, limit=10)
            seen += [i.key for i in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [f"users/{i:03d}" for i in range(25) if i != 7] and pages == 3
        everything = await e.kv_list(tenant, "ns", limit=1000)
        assert [i.key for i in everything.items] == sorted(set(keys) - {"users/007"})
        assert everything.next_cursor is None
        info = {i.key: i for i in everything.items}
        assert info["z"].size == 1 and info["z"].version == 1
        assert (await e.kv_list(tenant, "ns", prefix="nothing")).items == []
        assert (await e.kv_list(tenant, "empty-ns")).items == []
        with pytest.raises(InvalidArgument):
            await e.kv_list(tenant, "ns", limit=0)

    backend.run(body)


def test_log_append_read_idempotency_trim(backend, tenant):
    async def body(e):
        seqs = [(await e.log_append(tenant, "ns", f"e{i}".encode())).seq for i in range(1, 6)]
        assert seqs == [1, 2, 3, 4, 5]
        first = await e.log_append(tenant, "ns", b"once", idempotency_key="req-1")
        again = await e.log_append(tenant, "ns", b"different body", idempotency_key="req-1")
        assert (first.seq, first.replayed, again.seq, again.replayed) == (6, False, 6, True)
        page = await e.log_read(tenant, "ns", after=2, limit=2)
        assert [(x.seq, x.data) for x in page.items] == [(3, b"e3"), (4, b"e4")] and page.last_seq == 6
        assert [x.seq for x in (await e.log_read(tenant, "ns", after=0, limit=100)).items] == [1, 2, 3, 4, 5, 6]
        assert await e.log_trim(tenant, "ns", 3) == 4
        page = await e.log_read(tenant, "ns", after=0)
        assert [x.seq for x in page.items] == [4, 5, 6] and page.first_seq == 4
        assert await e.log_trim(tenant, "ns", 2) == 4  # trimming less is a no-op
        assert await e.log_trim(tenant, "ns", 100) == 7  # clamped to the last seq
        assert (await e.log_read(tenant, "ns")).items == []
        assert (await e.log_append(tenant, "ns", b"after trim")).seq == 7  # seqs never restart
        assert (await e.log_append(tenant, "ns", b"x", idempotency_key="req-1")).seq == 6  # remembered
        empty = await e.log_read(tenant, "fresh")
        assert (empty.items, empty.last_seq) == ([], 0)
        assert (await e.log_append(tenant, "ns", b"")).seq == 8
        assert (await e.log_append(tenant, "ns", bytes(range(256)))).seq == 9
        assert (await e.log_read(tenant, "ns", after=8)).items[0].data == bytes(range(256))

    backend.run(body)


def test_log_wait(backend, tenant):
    async def body(e):
        await e.log_append(tenant, "ns", b"first")
        page = await e.log_wait(tenant, "ns", after=0, timeout_s=5)
        assert [x.seq for x in page.items] == [1]

        async def later():
            await asyncio.sleep(0.3)
            await e.log_append(tenant, "ns", b"second")

        task = asyncio.create_task(later())
        t0 = time.monotonic()
        page = await e.log_wait(tenant, "ns", after=1, timeout_s=10)
        waited = time.monotonic() - t0
        await task
        assert [x.data for x in page.items] == [b"second"] and 0.2 < waited < 2
        t0 = time.monotonic()
        page = await e.log_wait(tenant, "ns", after=2, timeout_s=0.3)
        assert page.items == [] and 0.25 < time.monotonic() - t0 < 2
        # A wait on a namespace that does not exist yet wakes on its first append.
        task = asyncio.create_task(e.log_wait(tenant, "later-ns", after=0, timeout_s=10))
        await asyncio.sleep(0.1)
        await e.log_append(tenant, "later-ns", b"hello")
        assert [x.data for x in (await asyncio.wait_for(task, 5)).items] == [b"hello"]

    backend.run(body)


def test_tenant_scoping(backend, tenant):
    other = tenant + "-other"

    async def body(e):
        await e.kv_put(tenant, "foo", "k", b"mine")
        await e.log_append(tenant, "foo", b"mine")
        assert await e.kv_get(other, "foo", "k") is None
        assert (await e.kv_list(other, "foo")).items == []
        assert (await e.log_read(other, "foo")).items == []
        assert await e.kv_put(other, "foo", "k", b"theirs") == 1
        assert (await e.log_append(other, "foo", b"theirs")).seq == 1
        assert (await e.kv_get(tenant, "foo", "k")).value == b"mine"
        assert await e.kv_delete(other, "foo", "k") is True
        assert (await e.kv_get(tenant, "foo", "k")).value == b"mine"

    backend.run(body)


def test_limits_and_bad_input(backend, tenant):
    limits = StateLimits(max_value_bytes=1000, max_entry_bytes=500)

    async def body(e):
        await e.kv_put(tenant, "ns", "k", b"ok")
        with pytest.raises(TooLarge) as ei:
            await e.kv_put(tenant, "ns", "k", b"x" * 1001)
        assert ei.value.status == 413
        assert await e.kv_put(tenant, "ns", "edge", b"x" * 1000) == 1
        with pytest.raises(TooLarge):
            await e.log_append(tenant, "ns", b"x" * 501)
        with pytest.raises(TooLarge):
            await e.batch(tenant, "ns", [Op("put", "a", b"a"), Op("put", "k", b"x" * 1001)])
        for bad in ("", "a b", "/lead", "a//b", "a/../b", "..", "k\n", "é", "a?b", "x" * 513, "a%2f", 'q"'):
            with pytest.raises(InvalidName):
                await e.kv_put(tenant, "ns", bad, b"x")
        for bad in ("", "a/b", "-lead", "x" * 129, "sp ace", "ü"):
            with pytest.raises(InvalidName):
                await e.kv_put(tenant, bad, "k", b"x")
        with pytest.raises(InvalidArgument):
            await e.log_append(tenant, "ns", b"x", idempotency_key="")
        with pytest.raises(InvalidArgument):
            await e.log_read(tenant, "ns", after=-1)
        assert (await e.kv_get(tenant, "ns", "k")).value == b"ok"
        assert await e.kv_get(tenant, "ns", "a") is None
        assert (await e.log_read(tenant, "ns")).items == []
        assert await e.kv_put(tenant, "ns", "deep/er/key.json", b"{}") == 1

    backend.run(body, limits=limits)


def test_lost_update_cas_incrementers(backend, tenant):
    """50 concurrent read-modify-write loops with If-Match: no increment is lost."""

    async def body(e):
        await e.kv_put(tenant, "ns", "counter", b"0")
        wins, losses = 0, 0

        async def incrementer() -> None:
            nonlocal wins, losses
            for _ in range(6):
                item = await e.kv_get(tenant, "ns", "counter")
                try:
                    await e.kv_put(tenant, "ns", "counter", str(int(item.value) + 1).encode(), if_match=item.version)
                    wins += 1
                except Conflict:
                    losses += 1

        await asyncio.gather(*(incrementer() for _ in range(50)))
        item = await e.kv_get(tenant, "ns", "counter")
        assert int(item.value) == wins and item.version == wins + 1
        assert wins + losses == 300 and losses > 0 and wins > 0

    backend.run(body)


def test_idempotent_append_retried_concurrently(backend, tenant):
    async def body(e):
        await e.log_append(tenant, "ns", b"before")
        results = await asyncio.gather(*(e.log_append(tenant, "ns", b"payment #1", idempotency_key="pay-1")
                                         for _ in range(20)))  # fmt: skip
        assert len({r.seq for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
        page = await e.log_read(tenant, "ns")
        assert [x.data for x in page.items] == [b"before", b"payment #1"] and page.last_seq == 2

    backend.run(body)


def test_concurrent_appends_are_gap_free(backend, tenant):
    async def body(e):
        async def writer(w: int) -> list[int]:
            return [(await e.log_append(tenant, "ns", f"{w}:{i}".encode())).seq for i in range(10)]

        seqs = sorted(s for lst in await asyncio.gather(*(writer(w) for w in range(30))) for s in lst)
        assert seqs == list(range(1, 301))
        page = await e.log_read(tenant, "ns", limit=1000)
        assert [x.seq for x in page.items] == seqs

    backend.run(body)


def test_concurrent_batches_stay_atomic(backend, tenant):
    """Transfers between two keys in batches with If-Match: the sum never changes."""

    async def body(e):
        await e.batch(tenant, "ns", [Op("put", "x", b"100"), Op("put", "y", b"100")])

        async def mover(n: int) -> int:
            done = 0
            for _ in range(n):
                x, y = await e.kv_get(tenant, "ns", "x"), await e.kv_get(tenant, "ns", "y")
                try:
                    await e.batch(tenant, "ns", [
                        Op("put", "x", str(int(x.value) - 1).encode(), if_match=x.version),
                        Op("put", "y", str(int(y.value) + 1).encode(), if_match=y.version),
                    ])  # fmt: skip
                    done += 1
                except Conflict:
                    pass
            return done

        moved = sum(await asyncio.gather(*(mover(8) for _ in range(10))))
        x, y = await e.kv_get(tenant, "ns", "x"), await e.kv_get(tenant, "ns", "y")
        assert int(x.value) + int(y.value) == 200 and int(y.value) == 100 + moved and moved > 0

    backend.run(body)


def test_durable_across_reopen(backend, tenant):
    async def write(e):
        await e.kv_put(tenant, "ns", "k", b"v")
        await e.log_append(tenant, "ns", b"entry", idempotency_key="i")

    async def read(e):
        assert (await e.kv_get(tenant, "ns", "k")).value == b"v"
        assert (await e.log_append(tenant, "ns", b"entry", idempotency_key="i")).replayed
        assert (await e.log_append(tenant, "ns", b"next")).seq == 2

    backend.run(write)
    backend.run(read)


def test_grants(backend, tenant):
    async def body(e):
        assert await e.grants(tenant, "shared") == []
        assert not await e.granted(tenant, "shared", "sb_1")
        await e.grant(tenant, "shared", "sb_1")
        await e.grant(tenant, "shared", "sb_1")  # idempotent
        await e.grant(tenant, "shared", "sb_2")
        assert await e.grants(tenant, "shared") == ["sb_1", "sb_2"]
        assert await e.granted(tenant, "shared", "sb_1")
        assert not await e.granted(tenant + "x", "shared", "sb_1")  # per tenant
        assert not await e.granted(tenant, "other", "sb_1")
        assert await e.revoke(tenant, "shared", "sb_1") is True
        assert await e.revoke(tenant, "shared", "sb_1") is False
        assert await e.grants(tenant, "shared") == ["sb_2"]
        with pytest.raises(InvalidArgument):
            await e.grant(tenant, "shared", "bad id!")
        with pytest.raises(InvalidName):
            await e.grant(tenant, "bad ns", "sb_1")

    backend.run(body)
