"""The `Node` interface's behaviour, the same assertions against the in-process
NodeRuntime and against RemoteNode over a real `cloche node` (see conftest's `impl`):
what control relies on must not change when the node moves to another machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from cloche.node.api import CHUNK, ExecStream
from cloche.node.errors import FileError, InvalidSpec, InvalidState, SandboxNotFound
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecEvent
from cloche.node.watch import FsEvent
from tests.nodeapi.conftest import Impl

MB = 1 << 20


@pytest.fixture(scope="module")
def sandbox(impl: Impl) -> SandboxRecord:
    return impl.create()


async def blocks(data: bytes, size: int = 256 << 10) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [c async for c in chunks]


def test_create_get_list_and_exec(impl: Impl, sandbox: SandboxRecord) -> None:
    assert impl.node.get(sandbox.id).state == "running"
    assert sandbox.id in [r.id for r in impl.node.list()]
    r = impl.sh(sandbox.id, "echo out; echo err >&2; cat; exit 3", stdin=b"in", env={"X": "1"})
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\nin", b"err\n")
    assert impl.node.key and impl.node.capacity()["cpu"] > 0 and impl.node.networking


def test_exec_stream_with_stdin_and_signal(impl: Impl, sandbox: SandboxRecord) -> None:
    async def cat() -> list[ExecEvent]:
        stream: ExecStream = await impl.node.open_exec(sandbox.id, ExecRequest(cmd=["cat"], interactive=True))
        await stream.write_stdin(b"hello ")
        await stream.write_stdin(b"world")
        await stream.close_stdin()
        events = [e async for e in stream.events()]
        await stream.close()
        return events

    events = impl.run(cat())
    assert events[0].kind == "start" and events[0].pid > 0
    assert b"".join(e.data for e in events if e.kind == "stdout") == b"hello world"
    assert events[-1].kind == "exit" and events[-1].exit_code == 0

    async def interrupted() -> ExecEvent:
        stream = await impl.node.open_exec(sandbox.id, ExecRequest(cmd=["sleep", "60"]))
        async for event in stream.events():
            if event.kind == "start":
                await stream.signal(signal.SIGTERM)
            if event.kind == "exit":
                await stream.close()
                return event
        raise AssertionError("no exit")

    assert impl.run(interrupted()).signal == signal.SIGTERM


def test_multi_megabyte_file_streams_both_ways(impl: Impl, sandbox: SandboxRecord) -> None:
    data = os.urandom(8 * MB + 12345)
    files = impl.node.files(sandbox.id)
    assert impl.run(files.write("/workspace/big.bin", blocks(data))) == len(data)
    assert impl.run(files.size("/workspace/big.bin")) == len(data)
    chunks = impl.run(collect(files.read("/workspace/big.bin", chunk=MB)))
    assert max(len(c) for c in chunks) <= MB and len(chunks) >= 8
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()
    assert (
        impl.sh(sandbox.id, "sha256sum /workspace/big.bin").stdout.split()[0].decode()
        == hashlib.sha256(data).hexdigest()
    )


def test_list_stat_mkdir_rename_remove(impl: Impl, sandbox: SandboxRecord) -> None:
    files = impl.node.files(sandbox.id)
    impl.run(files.mkdir("/workspace/d/e"))
    impl.run(files.write("/workspace/d/e/f.txt", blocks(b"abc"), mode=0o600))
    assert impl.run(files.is_dir("/workspace/d")) and impl.run(files.exists("/workspace/d/e/f.txt"))
    entry = impl.run(files.stat("/workspace/d/e/f.txt"))
    assert (entry.name, entry.type, entry.size, entry.mode & 0o777) == ("f.txt", "file", 3, 0o600)
    impl.run(files.rename("/workspace/d/e/f.txt", "/workspace/d/g.txt"))
    assert sorted(e.name for e in impl.run(files.list("/workspace/d"))) == ["e", "g.txt"]
    assert impl.run(files.read_all("/workspace/d/g.txt", 100)) == b"abc"
    impl.run(files.remove("/workspace/d", recursive=True))
    assert not impl.run(files.exists("/workspace/d"))


def test_owners_metadata_and_watch(impl: Impl, sandbox: SandboxRecord) -> None:
    files = impl.node.files(sandbox.id)
    impl.run(files.mkdir_as("/workspace/u", 1000, 1000))
    assert impl.run(files.write_as("/workspace/u/f", blocks(b"xy"), 1000, 1000, 0o640)) == 2
    impl.run(files.set_metadata("/workspace/u/f", {"Owner": "me"}))
    info = impl.run(files.info("/workspace/u/f"))
    assert (info.uid, info.gid, info.st_mode & 0o777, info.size, info.metadata) == (
        1000,
        1000,
        0o640,
        2,
        {"owner": "me"},
    )
    assert [i.path for i in impl.run(files.walk("/workspace/u", 1))] == ["/workspace/u/f"]

    async def first_change() -> FsEvent:
        changes = await files.watch("/workspace/u", False)
        await files.write("/workspace/u/new", blocks(b"1"))
        return await asyncio.wait_for(anext(changes), 20)

    assert impl.run(first_change()) == FsEvent(name="new", kind="create")


def test_errors_are_the_same_exceptions(impl: Impl, sandbox: SandboxRecord) -> None:
    with pytest.raises(SandboxNotFound):
        impl.node.get("sb_0000000000000000")
    with pytest.raises(SandboxNotFound):
        impl.run(impl.node.current("sb_0000000000000000"))
    with pytest.raises(SandboxNotFound):
        impl.run(impl.node.exec("sb_0000000000000000", ExecRequest(cmd=["true"])))
    with pytest.raises(InvalidSpec):
        impl.run(impl.node.create(SandboxSpec(limits=Limits(cpu=1000))))
    files = impl.node.files(sandbox.id)
    with pytest.raises(FileError) as missing:
        impl.run(collect(files.read("/workspace/no-such-file")))
    assert missing.value.code == "not_found"
    with pytest.raises(FileError) as big:
        impl.run(files.read_all("/etc/passwd", 1))
    assert big.value.code == "too_large"


def test_pause_resume(impl: Impl) -> None:
    rec = impl.create()
    assert impl.run(impl.node.pause(rec.id)).state == "paused"
    assert impl.node.get(rec.id).state == "paused"
    assert impl.run(impl.node.current(rec.id)).state == "paused"  # asked of the node itself
    with pytest.raises(InvalidState):
        impl.sh(rec.id, "true")
    assert impl.run(impl.node.resume(rec.id)).state == "running"
    assert impl.sh(rec.id, "echo back").stdout == b"back\n"
    impl.run(impl.node.kill(rec.id))


def test_hibernate_wake_keeps_files(impl: Impl) -> None:
    rec = impl.create()
    impl.sh(rec.id, "echo kept > /workspace/k")
    hibernated = impl.run(impl.node.hibernate(rec.id))
    assert hibernated.state == "hibernated" and hibernated.snapshot
    with pytest.raises(InvalidState):
        impl.node.files(rec.id)
    assert impl.run(impl.node.wake(rec.id)).state == "running"
    assert impl.sh(rec.id, "cat /workspace/k").stdout == b"kept\n"
    impl.run(impl.node.kill(rec.id))


def test_set_network_resize_env_timeout(impl: Impl, sandbox: SandboxRecord) -> None:
    rec = impl.run(impl.node.set_network(sandbox.id, NetworkPolicy(egress=True, max_connections=7)))
    assert rec.spec.network.egress and rec.spec.network.max_connections == 7
    assert impl.node.get(sandbox.id).spec.network.max_connections == 7
    rec = impl.run(impl.node.resize(sandbox.id, Limits(cpu=0.5, memory_mb=384)))
    assert (rec.spec.limits.cpu, rec.spec.limits.memory_mb) == (0.5, 384)
    assert impl.node.usage(sandbox.id).pids >= 1 and impl.node.disk_usage(sandbox.id).total_bytes > 0
    impl.run(impl.node.set_env(sandbox.id, {"GREETING": "hi"}))
    assert impl.sh(sandbox.id, 'echo "$GREETING"').stdout == b"hi\n"
    before = time.time()
    expires = impl.run(impl.node.set_timeout(sandbox.id, 3600)).expires_at
    assert expires is not None and before + 3600 <= expires <= time.time() + 3600


def test_events_and_kill(impl: Impl) -> None:
    seen: list[tuple[str, str]] = []

    class Listener:
        async def sandbox_started(self, record: SandboxRecord) -> None:
            seen.append(("started", record.id))

        async def sandbox_stopped(self, sandbox_id: str) -> None:
            seen.append(("stopped", sandbox_id))

    impl.node.subscribe(Listener())
    rec = impl.create()
    impl.run(impl.node.kill(rec.id))
    with pytest.raises(SandboxNotFound):
        impl.node.get(rec.id)
    assert rec.id not in [r.id for r in impl.node.all_records()]
    deadline = time.time() + 10
    while ("stopped", rec.id) not in seen and time.time() < deadline:
        time.sleep(0.05)
    assert [e for e in seen if e[1] == rec.id] == [("started", rec.id), ("stopped", rec.id)]


def test_ingress_to_a_sandbox_port(impl: Impl, sandbox: SandboxRecord) -> None:
    server = "import socket\ns = socket.create_server(('0.0.0.0', 7000))\nc = s.accept()[0]\nd = b''\n"
    server += "while b := c.recv(65536):\n    d += b\nc.sendall(d.upper())\nc.close()\n"
    impl.run(impl.node.files(sandbox.id).write("/workspace/upper.py", blocks(server.encode())))
    impl.sh(sandbox.id, "setsid python3 /workspace/upper.py >/workspace/upper.log 2>&1 </dev/null &")
    payload = os.urandom(3 * CHUNK).hex().encode()[: 3 * CHUNK]

    async def talk() -> bytes:
        for _ in range(100):
            try:
                reader, writer = await impl.node.connect(sandbox.id, 7000)
                break
            except OSError:
                await asyncio.sleep(0.1)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return answer

    assert impl.run(talk()) == payload.upper()
