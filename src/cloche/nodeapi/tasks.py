"""Two ways of a byte stream run as two tasks, on both ends of the node API."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

EOF_MESSAGE = '"eof"'  # the text message that ends one way of a bridged byte stream


async def race(*coros: Coroutine[Any, Any, None]) -> None:
    """Run `coros` until the first ends; cancel the others (their errors are dropped:
    the first one's end, or its error, is what the caller sees)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()


class HalfClose:
    """Both ways of a bridged byte stream end with an EOF message; once each way has
    carried its EOF, the bridge closes. `sent`/`got` return when both ways are done."""

    def __init__(self) -> None:
        self._sent = asyncio.Event()
        self._got = asyncio.Event()

    async def sent(self) -> None:
        self._sent.set()
        await self._got.wait()

    async def got(self) -> None:
        self._got.set()
        await self._sent.wait()
