"""Errors raised by the node runtime; the server maps each to one HTTP status."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class: something in the node runtime could not be done."""

    code = "runtime_error"


class SandboxNotFound(RuntimeFailure):
    code = "not_found"


class InvalidState(RuntimeFailure):
    """The sandbox is not in a state that allows the operation (e.g. exec while stopped)."""

    code = "invalid_state"


class InvalidSpec(RuntimeFailure):
    code = "invalid_spec"


class TemplateNotFound(RuntimeFailure):
    code = "template_not_found"


class FileError(RuntimeFailure):
    """A file operation failed; `status` says how the API should answer."""

    code = "file_error"

    def __init__(self, message: str, status: int = 400, code: str = "file_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
