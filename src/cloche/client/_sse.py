"""A minimal, I/O-free Server-Sent Events decoder shared by the sync and async clients.

Feed it the response's lines one at a time; it returns a complete event whenever a blank
line ends one.  Only the ``event`` and ``data`` fields matter to Cloche; ``id``, ``retry``
and comments are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from .errors import ClocheError, error_from_response, status_for_code
from .models import ExecEvent, ExecExit, ExecOutput, ExecStart

__all__ = ["ExecEventDecoder", "SSEDecoder", "ServerSentEvent", "to_exec_event"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One decoded event: its name (``"message"`` if unnamed) and its joined data lines."""

    event: str
    data: str


class SSEDecoder:
    """Incremental SSE decoder (see the WHATWG event-stream interpretation rules)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerSentEvent | None:
        """Consume one line (without its terminator); return an event if one completed."""
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def flush(self) -> ServerSentEvent | None:
        """Return the pending event, if any, and reset (call at end of stream too)."""
        if not self._data and not self._event:
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data))
        self._event, self._data = "", []
        return event


def to_exec_event(sse: ServerSentEvent) -> ExecEvent | None:
    """Convert an SSE event of ``exec/stream`` to a typed event.

    Returns ``None`` for event names this SDK does not know (forward compatibility).

    Raises:
        ClocheError: for an ``error`` event (the server failed mid-stream) or a payload
            that is not the documented JSON.
    """
    try:
        payload = json.loads(sse.data) if sse.data else {}
        if sse.event == "start":
            return ExecStart.model_validate(payload)
        if sse.event in ("stdout", "stderr"):
            return ExecOutput(type=sse.event, data=payload.get("data", ""))
        if sse.event == "exit":
            return ExecExit.model_validate(payload)
    except (ValueError, AttributeError, ValidationError) as exc:
        raise ClocheError(200, "bad_stream", f"malformed {sse.event!r} event: {exc}") from exc
    if sse.event == "error":
        # The server failed mid-stream: {"code", "message"} or {"error": {...}},
        # optionally with the "status" the same failure would have as a response.
        body = payload if isinstance(payload, dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        code = str(err.get("code", "stream_error"))
        status = body.get("status", err.get("status"))
        if not isinstance(status, int) or status < 400:
            status = status_for_code(code)
        message = str(err.get("message", sse.data))
        return _raise(error_from_response(status, json.dumps({"error": {"code": code, "message": message}}).encode()))
    return None


def _raise(exc: ClocheError) -> None:
    raise exc


class ExecEventDecoder:
    """Lines of an ``exec/stream`` response in, typed :data:`ExecEvent` values out."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, line: str) -> ExecEvent | None:
        """Consume one line; return the event it completed, if any."""
        sse = self._sse.feed(line)
        return None if sse is None else to_exec_event(sse)

    def flush(self) -> ExecEvent | None:
        """The event pending at the end of the stream, if any."""
        sse = self._sse.flush()
        return None if sse is None else to_exec_event(sse)
