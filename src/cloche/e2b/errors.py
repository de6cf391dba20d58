"""E2B's error shape, translated from cloche's one error table.

E2B's API, its sandbox proxy and envd answer `{"code": status, "message"}`, and its
SDKs pick their exception by the status (502: the sandbox is gone or asleep; 507: the
disk is full; 401, 404, 429...). Statuses come from `control.errors.problem`; what
is E2B's own is only the shape, the proxy's 502 for a sandbox that is gone, and the
Connect codes of envd's RPC services."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cloche.control.errors import KNOWN, problem
from cloche.e2b.connect import ConnectError
from cloche.e2b.network import NetworkOptionError
from cloche.node.errors import SandboxNotFound


class E2bError(Exception):
    """An answer E2B's API or envd gives that cloche's own API has no error for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def gone(sandbox_id: str, why: str = "") -> E2bError:
    """What E2B's proxy answers for a sandbox that is not there (or not running)."""
    return E2bError(502, f"The sandbox {sandbox_id} was not found" + (f" ({why})" if why else ""))


def e2b_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status, headers=headers)


def answer(exc: Exception) -> JSONResponse | None:
    """The E2B answer to `exc`, None for an error that is nobody's to answer (a bug)."""
    if isinstance(exc, E2bError):
        return e2b_error(exc.status, exc.message)
    if isinstance(exc, NetworkOptionError):
        return e2b_error(400, str(exc))
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()[:5])
        return e2b_error(400, problems or "invalid request")
    if isinstance(exc, KNOWN):
        p = problem(exc)
        return e2b_error(p.status, p.message, p.headers or None)
    return None


def envd_answer(exc: Exception, sandbox_id: str) -> JSONResponse | None:
    """As `answer`, but a sandbox the node no longer has is E2B's proxy's 502."""
    return answer(gone(sandbox_id, str(exc)) if isinstance(exc, SandboxNotFound) else exc)


CONNECT_CODES = {400: "invalid_argument", 401: "unauthenticated", 404: "not_found", 429: "resource_exhausted",
                 502: "unavailable"}  # fmt: skip


def as_connect(exc: E2bError) -> ConnectError:
    """An in-sandbox request's refusal, as an RPC service answers it."""
    return ConnectError(CONNECT_CODES.get(exc.status, "internal"), exc.message)
