"""The SDK's server-sent-events decoder and exec event conversion (pure functions)."""

from __future__ import annotations

import pytest

from cloche import ServerError, Unavailable
from cloche.client._sse import ServerSentEvent, SSEDecoder, to_exec_event
from cloche.client.models import ExecExit, ExecOutput, ExecStart


def decode(text: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for line in text.split("\n") if (e := decoder.feed(line)) is not None]
    if (last := decoder.flush()) is not None:
        events.append(last)
    return events


def test_named_events_comments_crlf_and_multiline_data():
    stream = ': keep-alive\n\nevent: stdout\r\ndata: {"data":\r\ndata: "x"}\r\n\r\nevent: exit\ndata: {}\n\n'
    assert decode(stream) == [ServerSentEvent("stdout", '{"data":\n"x"}'), ServerSentEvent("exit", "{}")]


def test_unterminated_last_event_is_flushed():
    assert decode('event: exit\ndata: {"exit_code": 0}') == [ServerSentEvent("exit", '{"exit_code": 0}')]


def test_exec_events_are_typed():
    assert to_exec_event(ServerSentEvent("start", '{"pid": 7}')) == ExecStart(pid=7)
    assert to_exec_event(ServerSentEvent("stderr", '{"data": "oops"}')) == ExecOutput(type="stderr", data="oops")
    ev = to_exec_event(ServerSentEvent("exit", '{"exit_code": 3, "signal": 0, "truncated": true, "timed_out": false}'))
    assert ev == ExecExit(exit_code=3, signal=0, truncated=True, timed_out=False)


def test_unknown_events_are_skipped():
    assert to_exec_event(ServerSentEvent("progress", '{"pct": 50}')) is None


def test_error_event_raises_a_typed_error():
    with pytest.raises(ServerError, match="supervisor went away") as info:
        to_exec_event(ServerSentEvent("error", '{"code": "runtime_error", "message": "supervisor went away"}'))
    assert info.value.code == "runtime_error"
    with pytest.raises(Unavailable):
        to_exec_event(ServerSentEvent("error", '{"error": {"code": "unavailable", "message": "m"}, "status": 503}'))
