"""Errors raised by the node runtime. They say what went wrong (a class, and for files a
`code`), never how an API answers it: `control/errors.py` holds the one table from these
to HTTP statuses."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class: something in the node runtime could not be done."""

    code = "runtime_error"


class NodeUnreachable(RuntimeFailure):
    """The node that holds the sandbox does not answer (cluster mode: it may be restarting,
    or lost; a lost node's sandboxes resume elsewhere once its lease expires)."""

    code = "node_unreachable"


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
    """A file operation failed; `code` says which way (not_found, permission_denied,
    exists, not_empty, disk_full, too_large, not_running, io_error, or a kind of bad
    request such as invalid_path)."""

    def __init__(self, message: str, code: str = "file_error") -> None:
        super().__init__(message)
        self.code = code
