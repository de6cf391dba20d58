"""The one table from errors to HTTP answers. Control raises `ApiError` (status and code
chosen where the rule lives); the scheduler raises `SchedulerError`s and the node
`RuntimeFailure` subclasses and `FileError` codes, which say what went wrong and never
how to answer it. `problem`
turns any of them into (status, code, message, headers), and every API renders that in
its own shape: the native API and the ingress as `{"error": {"code", "message"}}`, the
E2B API and envd as `{"code": status, "message"}`.

A `RuntimeFailure` that is none of the known kinds answers 500, not 502: the node
runtime is part of this server (runc failed, the supervisor closed the stream), so
the failure is ours, not a bad answer from an upstream. 502 stays for what is a
gateway's failure: the ingress when a sandbox's port does not answer, and E2B's
envd proxy when the sandbox is gone (its SDKs read 502 as "sandbox not found"). The
control-plane database out of reach (`StoreUnavailable`) is 503: try again shortly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cloche.node.errors import (
    FileError,
    InvalidSpec,
    InvalidState,
    NodeUnreachable,
    RuntimeFailure,
    SandboxNotFound,
    TemplateNotFound,
)
from cloche.scheduler.errors import (
    InsufficientCapacity,
    InUse,
    NoCapacity,
    QuotaExceeded,
    RegionFull,
    SchedulerError,
)
from cloche.snapshots.store import SnapshotCorrupt
from cloche.store.engine import StoreUnavailable


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


@dataclass(frozen=True)
class Problem:
    """How an error is answered, whatever the API's shape."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


RUNTIME_FAILURE_STATUS = 500
RUNTIME_STATUS: list[tuple[type[RuntimeFailure], int]] = [
    (SandboxNotFound, 404),
    (InvalidState, 409),
    (InvalidSpec, 400),
    (TemplateNotFound, 400),
    (NodeUnreachable, 503),
]
# A FileError's code -> status; every other code is a bad request (400).
FILE_STATUS = {"not_found": 404, "permission_denied": 403, "exists": 409, "not_empty": 409, "not_running": 409,
               "too_large": 413, "disk_full": 507, "io_error": 500}  # fmt: skip
SCHEDULER_STATUS: dict[type[SchedulerError], int] = {
    QuotaExceeded: 429,
    InsufficientCapacity: 409,
    InUse: 409,
    NoCapacity: 503,
    RegionFull: 503,
}
KNOWN: tuple[type[Exception], ...] = (ApiError, SchedulerError, RuntimeFailure, SnapshotCorrupt, StoreUnavailable)
STORE_RETRY_AFTER_S = 1


def status_of(exc: RuntimeFailure) -> int:
    if isinstance(exc, FileError):
        return FILE_STATUS.get(exc.code, 400)
    return next((status for kind, status in RUNTIME_STATUS if isinstance(exc, kind)), RUNTIME_FAILURE_STATUS)


def problem(exc: Exception) -> Problem:
    """The answer to one of the KNOWN errors."""
    if isinstance(exc, ApiError):
        return Problem(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, SchedulerError):
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else {}
        return Problem(SCHEDULER_STATUS.get(type(exc), 500), exc.code, exc.message, headers)
    if isinstance(exc, SnapshotCorrupt):
        return Problem(500, "snapshot_corrupt", f"{exc}; the sandbox keeps its previous snapshot and was not started")
    if isinstance(exc, RuntimeFailure):
        return Problem(status_of(exc), exc.code, str(exc))
    if isinstance(exc, StoreUnavailable):
        return Problem(503, "store_unavailable", str(exc), {"Retry-After": str(STORE_RETRY_AFTER_S)})
    raise TypeError(f"no answer for {type(exc).__name__}") from exc


@contextmanager
def scheduler_errors() -> Iterator[None]:
    """Around a call into the scheduler: its typed refusals leave as ApiErrors."""
    try:
        yield
    except SchedulerError as exc:
        p = problem(exc)
        raise ApiError(p.status, p.code, p.message, p.headers) from exc
