"""`e2b.AsyncSandbox` against cloche: the same protocol driven by the async SDK."""

from __future__ import annotations

import asyncio

import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from tests.e2b.conftest import E2bEnv


def run(coro):
    return asyncio.run(coro)


def test_async_lifecycle(e2b: E2bEnv):
    async def main() -> None:
        s = await AsyncSandbox.create(timeout=120, metadata={"suite": "async"}, envs={"A": "1"})
        info = await s.get_info()
        assert info.metadata == {"suite": "async"} and info.state == SandboxState.RUNNING
        assert s.sandbox_id in {x.sandbox_id for x in await AsyncSandbox.list(
            query=SandboxQuery(metadata={"suite": "async"})).next_items()}  # fmt: skip
        await s.set_timeout(300)
        await s.files.write("/home/user/state.txt", "async kept")
        assert await s.pause() is True
        assert not await s.is_running()
        assert (await AsyncSandbox.get_info(s.sandbox_id)).state == SandboxState.PAUSED
        s2 = await AsyncSandbox.connect(s.sandbox_id)
        assert await s2.files.read("/home/user/state.txt") == "async kept"
        assert (await s2.commands.run("echo $A")).stdout == "1\n"
        assert await s2.kill() is True
        with pytest.raises(SandboxNotFoundException):
            await AsyncSandbox.get_info(s.sandbox_id)

    run(main())


def test_async_commands_and_files(e2b: E2bEnv):
    async def main() -> None:
        s = await AsyncSandbox.create(timeout=120)
        try:
            out: list[str] = []
            r = await s.commands.run("echo one; echo two >&2", on_stdout=out.append)
            assert r.stdout == "one\n" and r.stderr == "two\n" and out == ["one\n"]
            with pytest.raises(CommandExitException):
                await s.commands.run("exit 2")

            cat = await s.commands.run("cat", background=True, stdin=True)
            await s.commands.send_stdin(cat.pid, "async stdin\n")
            await s.commands.close_stdin(cat.pid)
            assert (await cat.wait()).stdout == "async stdin\n"

            sleeper = await s.commands.run("sleep 300", background=True)
            assert sleeper.pid in {p.pid for p in await s.commands.list()}
            assert await s.commands.kill(sleeper.pid) is True
            with pytest.raises(CommandExitException):
                await sleeper.wait()

            await s.files.write("/home/user/a/b.txt", "b")
            assert await s.files.read("a/b.txt") == "b"
            assert [e.name for e in await s.files.list("/home/user/a")] == ["b.txt"]
            assert await s.files.exists("/home/user/a/b.txt")
            assert await s.files.make_dir("/home/user/a/c") is True
            await s.files.rename("/home/user/a/b.txt", "/home/user/a/c/d.txt")
            await s.files.remove("/home/user/a/c")
            assert not await s.files.exists("/home/user/a/c")
            with pytest.raises(FileNotFoundException):
                await s.files.read("/home/user/a/c/d.txt")

            events = []
            handle = await s.files.watch_dir("/home/user/a", on_event=events.append)
            await s.files.write("/home/user/a/new.txt", "n")
            for _ in range(30):
                if events:
                    break
                await asyncio.sleep(0.1)
            await handle.stop()
            assert ("new.txt", "create") in {(e.name, e.type.value) for e in events}
        finally:
            await s.kill()

    run(main())
