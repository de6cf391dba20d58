"""Follow-the-user policy: an agent moves to its user's region only on sustained
evidence, never flaps, never leaves the allowed regions, and its history stays small."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloche.geo.follow import FollowRule, RegionHistory, follow_target

RULE = FollowRule(window_s=3600.0, min_requests=20, threshold=0.7, cooldown_s=6 * 3600.0)
REGIONS = ["us", "eu", "ap", "sa"]


def history_of(requests: list[tuple[str, float]]) -> RegionHistory:
    history = RegionHistory()
    for region, at in requests:
        history.note(region, at)
    return history


def test_no_move_below_min_requests() -> None:
    history = history_of([("eu", 1000.0 + i) for i in range(RULE.min_requests - 1)])
    assert follow_target(history, "us", RULE, 1100.0, None) is None
    history.note("eu", 1100.0)
    assert follow_target(history, "us", RULE, 1100.0, None) == "eu"


@given(
    own=st.integers(0, 200),
    other=st.integers(0, 200),
    rule=st.builds(FollowRule, min_requests=st.integers(0, 50), threshold=st.floats(0.51, 1.0)),
)
def test_moves_exactly_when_one_other_region_passes_threshold(own: int, other: int, rule: FollowRule) -> None:
    history = history_of([("us", 100.0)] * own + [("eu", 200.0)] * other)
    total = own + other
    target = follow_target(history, "us", rule, 300.0, None)
    should = total >= max(rule.min_requests, 1) and other / total >= rule.threshold
    assert target == ("eu" if should else None)


def test_requests_outside_the_window_do_not_count() -> None:
    history = history_of([("eu", 0.0)] * 100)
    assert follow_target(history, "us", RULE, RULE.window_s + 600.0, None) is None


@pytest.mark.parametrize("rule", [RULE, FollowRule()], ids=["strict", "default"])
@settings(max_examples=15, deadline=None)
@given(period_s=st.floats(60.0, 8 * 3600.0), per_hour=st.integers(20, 120))
def test_alternating_user_never_moves_twice_within_cooldown(rule: FollowRule, period_s: float, per_hour: int) -> None:
    """A user flipping between two regions every `period_s`: the agent follows at most
    once per cooldown, whatever the rhythm."""
    history, current, moves = RegionHistory(), "us", []
    step = 3600.0 / per_hour
    t = 0.0
    while t < 2 * 24 * 3600.0:
        user = "us" if int(t // period_s) % 2 == 0 else "eu"
        history.note(user, t)
        target = follow_target(history, current, rule, t, moves[-1] if moves else None)
        if target is not None:
            current = target
            moves.append(t)
        t += step
    assert all(b - a >= rule.cooldown_s for a, b in zip(moves, moves[1:], strict=False))
    if period_s >= 2 * rule.window_s:  # a stay long enough to pass the threshold: it follows
        assert moves


@given(
    requests=st.lists(st.tuples(st.sampled_from(REGIONS), st.floats(0.0, 7200.0)), max_size=300),
    allowed=st.sets(st.sampled_from(REGIONS)),
    current=st.sampled_from(REGIONS),
)
def test_target_is_always_allowed_and_never_the_current_region(
    requests: list[tuple[str, float]], allowed: set[str], current: str
) -> None:
    rule = FollowRule(min_requests=1, threshold=0.3)
    target = follow_target(history_of(requests), current, rule, 7200.0, None, allowed)
    assert target is None or (target in allowed and target != current)


@given(n=st.integers(1, 5000), span_s=st.floats(1.0, 30 * 24 * 3600.0))
def test_memory_is_bounded_by_buckets_not_requests(n: int, span_s: float) -> None:
    history = RegionHistory(bucket_s=300.0, max_buckets=24)
    for i in range(n):
        history.note(REGIONS[i % len(REGIONS)], i * span_s / n)
    assert history.bucket_count() <= 24
    assert len(json.dumps(history.to_json())) < 24 * 120


@given(requests=st.lists(st.tuples(st.sampled_from(REGIONS), st.floats(0.0, 90000.0)), max_size=200))
def test_history_round_trips_through_json(requests: list[tuple[str, float]]) -> None:
    history = history_of(requests)
    again = RegionHistory.from_json(json.loads(json.dumps(history.to_json())))
    assert again.shares(90000.0, 3600.0) == history.shares(90000.0, 3600.0)
    assert again.to_json() == history.to_json()


def test_the_servers_settings_default_to_the_tuned_rule() -> None:
    from cloche.config import Settings

    s = Settings()
    assert FollowRule(s.follow_window_s, s.follow_min_requests, s.follow_threshold, s.follow_cooldown_s) == FollowRule()
