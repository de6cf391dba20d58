"""The control plane's view of the round trip between regions, as the nodes measure it.

Nodes publish `rtt/<from>/<to>` in etcd (nodeapi/probes.py). `MeasuredLatency` reads them
every `refresh_s` into the `LatencyMatrix` the latency scorer takes: a pair measured both
ways counts as the mean of the two, and a pair nobody measured (a region with no live
node, or not probed yet) keeps the configured figure of `fallback`. Placement asks for
`.matrix` whenever it scores; it is never older than one refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable

from cloche.cluster.etcd import Entry, Etcd, EtcdUnavailable
from cloche.nodeapi.probes import RTT
from cloche.scheduler.scorers.latency import LatencyMatrix

log = logging.getLogger("cloche.fleet.rtt")
REFRESH_S = 5.0


def measured_rtt(entries: Iterable[Entry]) -> dict[tuple[str, str], float]:
    """Each unordered pair of regions (sorted) and its round trip in ms, the mean of both directions."""
    seen: dict[tuple[str, str], list[float]] = {}
    for entry in entries:
        source, _, target = entry.key[len(RTT) :].partition("/")
        try:
            ms = float(json.loads(entry.value)["ms"])
        except (ValueError, KeyError, TypeError):
            continue  # not a probe's record
        seen.setdefault((min(source, target), max(source, target)), []).append(ms)
    return {pair: sum(values) / len(values) for pair, values in seen.items()}


def matrix_of(measured: dict[tuple[str, str], float], fallback: LatencyMatrix) -> LatencyMatrix:
    """`fallback`'s pairs, with every measured pair replaced by its measurement."""
    return LatencyMatrix({**fallback.pairs(), **measured}, unknown_ms=fallback.unknown_ms)


class MeasuredLatency:
    """A `LatencyMatrix` kept current from the nodes' probes (`async with`, or start/close)."""

    def __init__(self, etcd: Etcd, refresh_s: float = REFRESH_S, fallback: LatencyMatrix | None = None) -> None:
        self.etcd = etcd
        self.refresh_s = refresh_s
        self.fallback = fallback or LatencyMatrix()
        self.measured: dict[tuple[str, str], float] = {}
        self.matrix = self.fallback
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> LatencyMatrix:
        """Read the probes now (between the periodic reads)."""
        entries, _ = await self.etcd.list(RTT)
        self.measured = measured_rtt(entries)
        self.matrix = matrix_of(self.measured, self.fallback)
        return self.matrix

    async def start(self) -> MeasuredLatency:
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            await self.refresh()
        self._task = asyncio.create_task(self._run(), name="measured-latency")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> MeasuredLatency:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except (EtcdUnavailable, TimeoutError) as e:  # keep the last matrix until etcd answers
                log.info("round trips not refreshed: %s", e)
