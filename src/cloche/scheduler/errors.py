"""The scheduler's own refusals, typed, so that the scheduler does not depend on the
HTTP layer above it: each carries a stable `code` and a message for people, and the
control plane decides which HTTP status each becomes (`cloche.control.errors`)."""

from __future__ import annotations


class SchedulerError(Exception):
    code = "scheduler_error"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s  # when to ask again, for refusals that may pass later


class QuotaExceeded(SchedulerError):
    """The tenant's quota (its live sandboxes plus its creates in flight) has no room."""

    code = "quota_exceeded"


class InsufficientCapacity(SchedulerError):
    """No node can hold the ask: not now, and for a size above every node's
    allocatable, never."""

    code = "insufficient_capacity"


class InUse(SchedulerError):
    """A shrink below what the sandbox really uses (memory the kernel cannot reclaim)."""

    code = "in_use"


class NoCapacity(SchedulerError):
    """The create waited its wait_s in the admission queue and nothing made room."""

    code = "no_capacity"


class RegionFull(NoCapacity):
    """The regions an app or sandbox is pinned to (data residency) have no live node with
    room; it is never placed elsewhere."""

    code = "region_full"
