"""What running a command or Python code gives back, whole or as a stream of events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import ApiModel


class ExecResult(ApiModel):
    """The outcome of a finished command (``POST /v1/sandboxes/{id}/exec``)."""

    exit_code: int | None
    signal: int | str | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out


class CodeError(ApiModel):
    """An exception the code raised: its class name, ``str()`` and traceback."""

    name: str
    value: str
    traceback: str = ""


class CodeResult(ApiModel):
    """What a cell of Python did (``POST /v1/sandboxes/{id}/code``)."""

    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = Field(default_factory=list)
    """The last expression's value and ``display()`` calls: ``text`` (repr), and ``html``,
    ``png`` (base64)... when the object has them; ``is_main_result`` marks the former."""
    error: CodeError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The repr of the last expression's value, if it had one."""
        return next((r.get("text") for r in self.results if r.get("is_main_result")), None)


class ExecStart(ApiModel):
    """First streamed event: the command started with process id ``pid``."""

    type: Literal["start"] = "start"
    pid: int | None = None


class ExecOutput(ApiModel):
    """A chunk of output; ``type`` says whether it came from stdout or stderr."""

    type: Literal["stdout", "stderr"]
    data: str


class ExecExit(ApiModel):
    """Last streamed event: the command finished."""

    type: Literal["exit"] = "exit"
    exit_code: int | None = None
    signal: int | str | None = None
    truncated: bool = False
    timed_out: bool = False


ExecEvent = Annotated[ExecStart | ExecOutput | ExecExit, Field(discriminator="type")]
"""One event of ``exec_stream``: :class:`ExecStart`, :class:`ExecOutput` or :class:`ExecExit`."""
