"""The access log's writer: a busy server writes one batch of lines per event-loop turn,
not one syscall per request, and loses no line when the process stops."""

from __future__ import annotations

import asyncio
import io
import logging

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
    log, _ = _logger(stream)

    async def requests() -> None:
        for i in range(50):
            log.info('{"request": %d}', i)
        assert stream.getvalue() == ""  # nothing written while the turn runs
        await asyncio.sleep(0)
        await asyncio.sleep(0)

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
