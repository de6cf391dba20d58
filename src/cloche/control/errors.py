"""The one error type the HTTP layer turns into `{"error": {"code", "message"}}`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cloche.scheduler.errors import InsufficientCapacity, InUse, NoCapacity, QuotaExceeded, SchedulerError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(kind: str, ident: str) -> ApiError:
    """The same answer for a resource that does not exist and one of another tenant."""
    return ApiError(404, "not_found", f"{kind} {ident} not found")


# ---- the scheduler's refusals, as HTTP ------------------------------------------------

SCHEDULER_STATUS: dict[type[SchedulerError], int] = {
    QuotaExceeded: 429,
    InsufficientCapacity: 409,
    InUse: 409,
    NoCapacity: 503,
}


@contextmanager
def scheduler_errors() -> Iterator[None]:
    """Around a call into the scheduler: its typed refusals leave as ApiErrors."""
    try:
        yield
    except SchedulerError as exc:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
        raise ApiError(SCHEDULER_STATUS.get(type(exc), 500), exc.code, exc.message, headers) from exc
