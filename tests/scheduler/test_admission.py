"""Quotas, priorities and the fair queue."""

from __future__ import annotations

import pytest

from cloche.scheduler.admission import FairQueue, Quota, QuotaLedger, dispatch
from cloche.scheduler.model import Resources


def test_quota_ledger_counts_sandboxes_and_active_requests():
    ledger = QuotaLedger()
    q = Quota(max_sandboxes=2, max_cpu=2, max_memory_mb=2048)
    assert ledger.admit("t", q, Resources(1, 1024)) is None
    assert "max_cpu" in ledger.admit("t", q, Resources(1.5, 512))
    assert "max_memory_mb" in ledger.admit("t", q, Resources(0.5, 1500))
    assert ledger.admit("t", q, Resources(1, 1024)) is None
    assert "max_sandboxes" in ledger.check("t", q, Resources(0, 0))
    ledger.deactivate("t", Resources(1, 1024))  # one went to sleep: room for a wake, not a new one
    assert ledger.check("t", q, Resources(1, 1024), new=False) is None
    assert "max_sandboxes" in ledger.check("t", q, Resources(1, 1024))
    ledger.remove("t", Resources(1, 1024), active=False)
    assert ledger.check("t", q, Resources(1, 1024)) is None
    assert ledger.check("other", q, Resources(2, 2048)) is None


def test_fair_queue_round_robin_between_tenants_of_one_priority():
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push(f"a{i}", "a")
    q.push("b0", "b")
    q.push("b1", "b")
    q.push("c0", "c")
    assert [x for x, _, _ in q.order()] == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    assert [q.pop() for _ in range(len(q))] == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    with pytest.raises(IndexError):
        q.pop()


def test_fair_queue_priorities_first_and_served_rotates():
    q: FairQueue[str] = FairQueue()
    q.push("low", "a", 0)
    q.push("high", "b", 5)
    q.push("a1", "a", 5)
    q.push("a2", "a", 5)
    assert [x for x, _, _ in q.order()] == ["high", "a1", "a2", "low"]
    assert q.position("a2") == 2 and "a2" in q and len(q) == 4
    q.served("a1")  # a goes to the back of its round
    q.push("b2", "b", 5)
    assert [x for x, _, _ in q.order()] == ["high", "a2", "b2", "low"]
    assert q.remove("a2") and not q.remove("a2")
    with pytest.raises(ValueError):
        q.push("low", "a", 0)
    with pytest.raises(KeyError):
        q.served("nothing")


def test_dispatch_backfills_within_a_priority_but_not_below():
    q: FairQueue[tuple[str, int]] = FairQueue()
    big, small, low = ("big", 10), ("small", 1), ("low", 1)
    q.push(big, "a", 1)
    q.push(small, "b", 1)
    q.push(low, "c", 0)
    room = [3]

    def fits(item: tuple[str, int]) -> bool:
        if item[1] <= room[0]:
            room[0] -= item[1]
            return True
        return False

    assert dispatch(q, fits) == [small]  # backfilled past big, but low waits behind big
    assert [x for x, _, _ in q.order()] == [big, low]
    room[0] = 20
    assert dispatch(q, fits) == [big, low]
    assert not len(q)


def test_dispatch_stops_when_told():
    q: FairQueue[int] = FairQueue()
    for i in range(5):
        q.push(i, "t")
    seen = []

    def nothing_fits(item: int) -> None:
        seen.append(item)
        return None

    assert dispatch(q, nothing_fits) == [] and seen == [0] and len(q) == 5
