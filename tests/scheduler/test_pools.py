"""Warm-pool autosizing: EWMA claim rate, Little's law, the memory budget, cold templates."""

from __future__ import annotations

from cloche.scheduler.pools import PoolSizer


def _drive(sizer: PoolSizer, template: str, per_s: float, seconds: int, start: float = 0.0) -> float:
    t = start
    for _ in range(seconds):
        t += 1
        sizer.claimed(template, 0)
        if per_s:
            sizer.claimed(template, int(per_s))
        sizer.tick(t)
    return t


def test_hot_template_gets_littles_law_plus_headroom():
    s = PoolSizer(budget_mb=10_000, sandbox_mb=32, half_life_s=10, z=2)
    s.refilled("py", 0.5)
    _drive(s, "py", 4, 120)
    assert abs(s.stats["py"].rate - 4) < 0.05
    # λW = 2 -> 2 + 2·sqrt(2) = 4.83 -> 5
    assert s.sizes()["py"] == 5


def test_cold_templates_keep_no_pool_and_rates_decay():
    s = PoolSizer(budget_mb=10_000, half_life_s=10, cold_rate=0.01)
    t = _drive(s, "rare", 1, 30)
    assert s.sizes()["rare"] >= 1
    _drive(s, "rare", 0, 300, start=t)
    assert s.stats["rare"].rate < 0.01 and s.sizes()["rare"] == 0


def test_budget_goes_to_the_hottest_templates_first():
    s = PoolSizer(budget_mb=32 * 6, sandbox_mb=32, half_life_s=5, default_refill_s=1.0)
    for t in range(1, 60):
        s.claimed("hot", 8)
        s.claimed("warm", 2)
        s.tick(t)
    sizes = s.sizes()
    assert sizes["hot"] == 6 and sizes["warm"] == 0
    assert sum(sizes.values()) * 32 <= 32 * 6


def test_floor_is_kept_when_idle():
    s = PoolSizer(budget_mb=1024, floor={"base": 2})
    assert s.tick(0) == {"base": 2} and s.tick(100) == {"base": 2}
