"""Start `member_proc` children and read what they say, with a deadline on every read."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Member:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[list[str]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, endpoint: str, prefix: str, role: str, ident: str) -> Member:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.cluster.member_proc", endpoint, prefix, role, ident,
            stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.put_nowait(raw.decode().split())

    async def line(self, timeout: float = 20.0) -> list[str]:
        return await asyncio.wait_for(self.lines.get(), timeout)

    def kill(self) -> None:
        self.proc.kill()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def reap(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader
