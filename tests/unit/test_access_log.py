"""The access log's writer: a busy server writes one batch of lines per event-loop turn,
from a thread of its own (never on the loop), and loses no line when the process stops."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from cloche.server import access
from cloche.server.access import BatchedHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _logger(stream: CountingStream) -> tuple[logging.Logger, BatchedHandler]:
    handler = BatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"test.access.{id(stream)}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, handler


def test_lines_of_one_loop_turn_leave_in_one_write() -> None:
    stream = CountingStream()

    async def requests() -> None:
        for i in range(50):
            log.info('{"request": %d}', i)
        assert stream.getvalue() == ""  # nothing written while the turn runs
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        handler.flush()  # waits for the writer thread

    log, handler = _logger(stream)
    asyncio.run(requests())
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [f'{{"request": {i}}}' for i in range(50)]


def test_pending_lines_are_written_when_the_process_stops() -> None:
    """The process exiting before the loop's next turn still gets every line out, once:
    logging.shutdown, run at exit, flushes the handler."""
    stream = CountingStream()
    log, handler = _logger(stream)

    async def last_request() -> None:
        log.info("last line")
        assert stream.getvalue() == ""
        logging.shutdown([lambda: handler])  # what atexit does, for this handler
        assert stream.getvalue() == "last line\n"

    asyncio.run(last_request())
    assert stream.getvalue() == "last line\n" and stream.writes == 1


def test_without_a_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    log, _ = _logger(stream)
    log.info("from a thread")
    assert stream.getvalue() == "from a thread\n"


def test_a_line_is_the_json_of_its_fields() -> None:
    """The line is formatted by hand (it is on every request's path): it must stay exactly
    what json.dumps makes of the same fields, quotes and non-ASCII included."""
    got: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: got.append(record.getMessage())  # type: ignore[method-assign]
    access.log.addHandler(handler)
    level = access.log.level
    access.log.setLevel(logging.INFO)
    try:
        access.write(1700000000.1234, "PUT", "/v1/state/{ns}/kv/{key}", 200, 0.0123456, "tn_1", None, 'r"\u00e9\n')
        access.write(1700000000.0, "WEBSOCKET", None, None, 2.0, None, "sb_1", "id")
    finally:
        access.log.removeHandler(handler)
        access.log.setLevel(level)
    fields = ["time", "method", "path", "status", "duration_ms", "tenant_id", "sandbox_id", "request_id"]
    expected = [
        ["2023-11-14T22:13:20.123+00:00", "PUT", "/v1/state/{ns}/kv/{key}", 200, 12.346, "tn_1", None, 'r"\u00e9\n'],
        ["2023-11-14T22:13:20.000+00:00", "WEBSOCKET", None, None, 2000.0, None, "sb_1", "id"],
    ]
    assert got == [json.dumps(dict(zip(fields, values, strict=True)), separators=(",", ":")) for values in expected]
