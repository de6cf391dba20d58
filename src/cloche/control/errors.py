"""The one error type the HTTP layer turns into `{"error": {"code", "message"}}`."""

from __future__ import annotations


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
