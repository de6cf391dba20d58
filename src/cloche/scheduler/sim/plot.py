"""`cloche sim --plot`: admission rate, queue wait and user latency (p50 / p99) per
policy, as a PNG.

matplotlib is imported only here, when a plot is asked for, so the simulator itself
needs nothing beyond the scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.scheduler.sim.report import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def draw(results: Sequence[Result], path: Path, title: str = "cloche sim") -> Path:
    """Three panels, one bar (or pair of bars) per policy: the share of offered agents
    admitted, the queue wait at p50 and p99, and the user latency at p50 and p99."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sums = [r.summary() for r in results]
    xs = list(range(len(results)))
    fig, (admit, wait, latency) = plt.subplots(1, 3, figsize=(14, 4.5), dpi=110)
    admit.bar_label(admit.bar(xs, [100 * s["admit_rate"] for s in sums], color="#4c72b0"), fmt="%.1f%%", fontsize=8)
    admit.set_ylim(0, 110)
    _pair(wait, sums, "wait_p{}_s", "%.1f")
    _pair(latency, sums, "latency_p{}_ms", "%.0f")
    latency.set_yscale("symlog", linthresh=10)
    for ax, label in ((admit, "agents admitted (% of offered)"), (wait, "queue wait (s)"),
                      (latency, "user latency (ms)")):  # fmt: skip
        ax.set_xticks(xs, [r.policy for r in results], rotation=15, ha="right", fontsize=8)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _pair(ax: Axes, sums: Sequence[dict[str, float]], key: str, fmt: str, width: float = 0.4) -> None:
    """p50 and p99 bars side by side per policy; `key` has a {} for the percentile."""
    for p, shift in ((50, -width / 2), (99, width / 2)):
        bars = ax.bar([i + shift for i in range(len(sums))], [s[key.format(p)] for s in sums], width, label=f"p{p}")
        ax.bar_label(bars, fmt=fmt, fontsize=7)
    ax.margins(y=0.15)  # room for the labels
    ax.legend(loc="upper center", ncols=2, fontsize=8)
