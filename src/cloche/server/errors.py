"""Every error leaves the server as `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloche.control.errors import ApiError
from cloche.node.errors import (
    FileError,
    InvalidSpec,
    InvalidState,
    RuntimeFailure,
    SandboxNotFound,
    TemplateNotFound,
)
from cloche.snapshots.store import SnapshotCorrupt

RUNTIME_STATUS: list[tuple[type[RuntimeFailure], int]] = [
    (SandboxNotFound, 404),
    (InvalidState, 409),
    (InvalidSpec, 400),
    (TemplateNotFound, 400),
]


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error cloche itself answers, marked with X-Cloche-Error so a proxied agent's
    own error statuses can be told apart from ours."""
    return JSONResponse(error_body(code, message), status, headers={**(headers or {}), "X-Cloche-Error": code})


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(FileError)
    async def file_error(_: Request, exc: FileError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(SnapshotCorrupt)
    async def snapshot_corrupt(_: Request, exc: SnapshotCorrupt) -> JSONResponse:
        message = f"{exc}; the sandbox keeps its previous snapshot and was not started"
        return error_response(500, "snapshot_corrupt", message)

    @app.exception_handler(RuntimeFailure)
    async def runtime_error(_: Request, exc: RuntimeFailure) -> JSONResponse:
        for kind, status in RUNTIME_STATUS:
            if isinstance(exc, kind):
                return error_response(status, exc.code, str(exc))
        return error_response(500, "runtime_error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_field(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:10]]
        return error_response(422, "validation_error", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
