"""Every error leaves the server as `{"error": {"code": ..., "message": ...}}`: cloche's own
errors, FastAPI's validation errors, Starlette's 404 and 405, and unexpected exceptions
(500). `install` works for any Starlette app: one mounted under the server needs it too,
since errors raised inside a mounted app never reach the outer app's handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloche.control.errors import KNOWN, problem
from cloche.server import access

HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}  # fmt: skip


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error cloche itself answers, marked with X-Cloche-Error so a proxied agent's
    own error statuses can be told apart from ours."""
    return JSONResponse(error_body(code, message), status, headers={**(headers or {}), "X-Cloche-Error": code})


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _known(_: Request, exc: Exception) -> JSONResponse:
    """Control's, the node's and the snapshot store's errors, by the one table."""
    p = problem(exc)
    return error_response(p.status, p.code, p.message, p.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [f"{_field(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:10]]
    return error_response(422, "validation_error", "; ".join(problems))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _too_deep(_: Request, __: RecursionError) -> JSONResponse:
    return error_response(400, "invalid_request", "JSON is nested too deeply")


async def _unexpected(request: Request, _: Exception) -> JSONResponse:
    """Anything else is a bug: a 500 in the usual shape, with the request id (this answer
    leaves outside the access log's middleware), whose line sits by the traceback. uvicorn
    closes the connection after an exception, so the client is told not to reuse it."""
    rid = access.request_id(request.scope)
    message = "internal server error; the server's log has the details" + (f" (request {rid})" if rid else "")
    headers = {"Connection": "close"} | ({"X-Request-Id": rid} if rid else {})
    return error_response(500, "internal_error", message, headers)


HANDLERS: list[tuple[type[Exception], Callable[[Request, Any], Any]]] = [
    *((kind, _known) for kind in KNOWN),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (RecursionError, _too_deep),
    (Exception, _unexpected),
]


def install(app: Starlette) -> None:
    for kind, handler in HANDLERS:
        app.add_exception_handler(kind, handler)
