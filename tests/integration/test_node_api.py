"""The in-process NodeRuntime is a `cloche.node.api.Node`: every member of the Protocol
exists with the same parameters, and every call works through the Protocol type on a
real node (real runc, real mounts). A remote node client will run this same module."""

from __future__ import annotations

import asyncio
import errno
import inspect
import io
import signal
import tarfile
import time
from collections.abc import AsyncIterator

import pytest

from cloche.node import api
from cloche.node.errors import FileError, InvalidState
from cloche.node.local_files import LocalFiles
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime
from cloche.node.spec import Limits, SandboxSpec


def _members(proto: type) -> list[str]:
    return [n for n in dir(proto) if not n.startswith("_") and n not in ("register",)]


@pytest.mark.parametrize("proto,impl", [(api.Node, NodeRuntime), (api.SandboxFiles, LocalFiles)])
def test_every_protocol_member_exists_with_the_same_parameters(proto: type, impl: type) -> None:
    for name in _members(proto):
        want = inspect.getattr_static(proto, name)
        if isinstance(want, property):
            continue  # an instance attribute satisfies it too: see test_the_runtime_is_a_node
        have = inspect.getattr_static(impl, name, None)
        assert have is not None, f"{impl.__name__} lacks {name}"
        assert callable(have), name
        params = list(inspect.signature(want).parameters.values())
        got = list(inspect.signature(have).parameters.values())
        assert [(p.name, p.kind, p.default) for p in got] == [(p.name, p.kind, p.default) for p in params], name
        assert inspect.iscoroutinefunction(have) == inspect.iscoroutinefunction(want), name


def test_the_runtime_is_a_node(node) -> None:
    n: api.Node = node.rt
    assert isinstance(n, api.Node)
    assert n.key == node.rt.key and n.default_isolation == "runc" and n.networking
    assert set(n.capacity()) == {"cpu", "memory_mb"}


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def sandbox_started(self, record: SandboxRecord) -> None:
        self.events.append(("started", record.id))

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        self.events.append(("stopped", sandbox_id))


def test_files_stream_in_chunks_through_the_protocol(node, sandbox) -> None:
    n: api.Node = node.rt
    files = n.files(sandbox.id)
    assert isinstance(files, api.SandboxFiles)
    big = bytes(range(256)) * 12_000  # 3 MB: more than one chunk each way
    assert node.run(files.mkdir("/tmp/api/sub")) is None
    written = node.run(files.write("/tmp/api/big", _chunks(big[:1000], b"", big[1000:]), 0o600))
    assert written == len(big)
    chunks = node.run(_collect(files.read("/tmp/api/big", 1 << 20)))
    assert b"".join(chunks) == big and max(len(c) for c in chunks) <= 1 << 20 and len(chunks) == 3
    assert node.run(files.size("/tmp/api/big")) == len(big)
    assert node.run(files.stat("/tmp/api/big")).mode == 0o600
    assert node.run(files.read_all("/tmp/api/big", 4 << 20)) == big
    with pytest.raises(FileError) as too_big:
        node.run(files.read_all("/tmp/api/big", 10))
    assert too_big.value.code == "too_large"
    node.run(files.symlink("/tmp/api/link", "big"))
    node.run(files.hardlink("/tmp/api/hard", "/tmp/api/big"))
    node.run(files.rename("/tmp/api/hard", "/tmp/api/sub/hard"))
    names = {e.name: e.type for e in node.run(files.list("/tmp/api"))}
    assert names == {"big": "file", "link": "symlink", "sub": "dir"}
    assert node.run(files.is_dir("/tmp/api/sub")) and not node.run(files.is_dir("/tmp/api/big"))
    assert node.sh(sandbox.id, "cat /tmp/api/link | wc -c").stdout.strip() == str(len(big)).encode()
    node.run(files.remove("/tmp/api", recursive=True))
    assert not node.run(files.exists("/tmp/api"))


def test_a_failed_upload_stream_leaves_the_old_file(node, sandbox) -> None:
    files = node.rt.files(sandbox.id)
    node.run(files.write("/tmp/keep", _chunks(b"old")))

    async def broken() -> AsyncIterator[bytes]:
        yield b"new"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        node.run(files.write("/tmp/keep", broken()))
    assert node.sh(sandbox.id, "cat /tmp/keep; ls -a /tmp | grep -c cloche-tmp").stdout == b"old0\n"


def test_files_as_a_user_with_owners_metadata_and_a_walk(node, sandbox) -> None:
    files = node.rt.files(sandbox.id)
    node.run(files.mkdir_as("/tmp/as/a/b", 1000, 1001, 0o750))
    assert node.run(files.write_as("/tmp/as/a/f.txt", _chunks(b"hey"), 1000, 1001, 0o640)) == 3
    shown = node.sh(sandbox.id, "stat -c '%u:%g %a' /tmp/as /tmp/as/a/b /tmp/as/a/f.txt").stdout.split(b"\n")
    assert shown[:3] == [b"1000:1001 750", b"1000:1001 750", b"1000:1001 640"]
    f = node.run(files.info("/tmp/as/a/f.txt"))
    assert (f.name, f.path, f.kind, f.size, f.uid, f.gid, f.st_mode) == ("f.txt", "/tmp/as/a/f.txt", "file", 3, 1000,
                                                                        1001, 0o100640)  # fmt: skip
    assert f.metadata == {} and f.target is None and f.mtime > 0
    node.run(files.set_metadata("/tmp/as/a/f.txt", {"Owner": "me"}))
    assert node.run(files.info("/tmp/as/a/f.txt")).metadata == {"owner": "me"}
    node.run(files.symlink("/tmp/as/link", "a/f.txt"))
    node.run(files.symlink("/tmp/as/nowhere", "/missing"))
    link, dangling = node.run(files.info("/tmp/as/link")), node.run(files.info("/tmp/as/nowhere"))
    assert (link.kind, link.target, link.target_kind) == ("symlink", "a/f.txt", "file")
    assert (dangling.target, dangling.target_kind) == ("/missing", None)
    assert (node.run(files.info("/")).name, node.run(files.info("/")).kind) == ("/", "dir")
    assert [e.path for e in node.run(files.walk("/tmp/as", 1))] == ["/tmp/as/a", "/tmp/as/link", "/tmp/as/nowhere"]
    deep = [e.path for e in node.run(files.walk("/tmp/as", 3))]
    assert deep == ["/tmp/as/a", "/tmp/as/link", "/tmp/as/nowhere", "/tmp/as/a/b", "/tmp/as/a/f.txt"]
    with pytest.raises(FileError) as not_dir:
        node.run(files.walk("/tmp/as/a/f.txt", 1))
    assert not_dir.value.code == "not_a_directory"


def test_a_watch_streams_changes_until_the_sandbox_stops(node) -> None:
    n: api.Node = node.rt
    rec = node.run(n.create(SandboxSpec(), use_pool=False))
    files = n.files(rec.id)
    node.run(files.mkdir("/tmp/w/sub"))

    async def watch() -> tuple[list[tuple[str, str]], str]:
        changes = await files.watch("/tmp/w", recursive=True)
        seen: list[tuple[str, str]] = []
        for script, want in [("echo 1 > /tmp/w/sub/f", ("sub/f", "create")),
                             ("echo 22 >> /tmp/w/sub/f", ("sub/f", "write")),
                             ("chmod 600 /tmp/w/sub/f", ("sub/f", "chmod")),
                             ("rm /tmp/w/sub/f", ("sub/f", "remove"))]:  # fmt: skip
            await n.exec(rec.id, ExecRequest(cmd=["sh", "-c", script]))
            while want not in seen:
                event = await asyncio.wait_for(anext(changes), 10)
                seen.append((event.name, event.kind))
        with pytest.raises(FileError):
            await files.watch("/etc/passwd", recursive=False)  # not a directory
        await n.kill(rec.id)
        try:
            async for event in changes:
                seen.append((event.name, event.kind))
        except FileError as exc:
            return seen, exc.code
        return seen, "ended without an error"

    seen, code = node.run(watch())
    assert seen == [("sub/f", "create"), ("sub/f", "write"), ("sub/f", "chmod"), ("sub/f", "remove")]
    assert code == "not_running"


def test_exec_streams_through_the_protocol(node, sandbox) -> None:
    n: api.Node = node.rt

    async def talk() -> tuple[list[str], bytes, int]:
        stream = await n.open_exec(sandbox.id, ExecRequest(cmd=["cat"], interactive=True, stdin=b""))
        assert isinstance(stream, api.ExecStream)
        await stream.write_stdin(b"hello")
        await stream.close_stdin()
        kinds, out, code = [], b"", -1
        async for event in stream.events():
            kinds.append(event.kind)
            out += event.data if event.kind == "stdout" else b""
            code = event.exit_code if event.kind == "exit" else code
        await stream.close()
        return kinds, out, code

    kinds, out, code = node.run(talk())
    assert (kinds[0], kinds[-1], out, code) == ("start", "exit", b"hello", 0)
    result = node.run(n.exec(sandbox.id, ExecRequest(cmd=["sh", "-c", "echo $X"], env={"X": "y"})))
    assert result.stdout == b"y\n"

    async def background() -> int:
        stream = await n.open_exec(sandbox.id, ExecRequest(cmd=["sleep", "60"], detach=True))
        async for event in stream.events():
            if event.kind == "start":
                break
        await stream.close()
        return await n.signal(sandbox.id, stream.pid, signal.SIGKILL)

    assert node.run(background()) == 0


def test_signalling_a_command_that_exited_is_esrch_even_while_its_group_lingers(node, sandbox) -> None:
    """E2B's `commands.kill` of a finished command answers False: the pid is gone, even if
    a process of its group (here a child it left behind) still runs."""
    n: api.Node = node.rt

    async def leave_a_child() -> int:
        stream = await n.open_exec(sandbox.id, ExecRequest(cmd=["sh", "-c", "sleep 60 & echo started"], detach=True))
        async for event in stream.events():
            if event.kind == "exit":
                break
        await stream.close()
        return stream.pid

    pid = node.run(leave_a_child())
    # the child runs `sleep` once it has exec'd, which may be a moment after the shell exited
    lingering = ExecRequest(cmd=["sh", "-c", f"until pgrep -g {pid} -x sleep; do sleep 0.01; done"], timeout_s=10)
    assert node.run(n.exec(sandbox.id, lingering)).exit_code == 0
    assert node.run(n.signal(sandbox.id, pid, signal.SIGKILL)) == errno.ESRCH
    assert node.run(n.exec(sandbox.id, ExecRequest(cmd=["pkill", "-g", str(pid), "sleep"]))).exit_code == 0


def test_ports_and_the_host_directory(node, sandbox) -> None:
    n: api.Node = node.rt
    serve = ("import socket,os\n"
             "u=socket.socket(socket.AF_UNIX); u.bind('/.cloche/host/t.sock'); u.listen()\n"
             "t=socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('0.0.0.0', 7070))\n"
             "t.listen(); open('/.cloche/host/t.log','w').write('x'*50+'tail')\n"
             "for s in (u, t):\n c,_=s.accept(); c.sendall(c.recv(10).upper()); c.close()\n")  # fmt: skip
    server = node.run(n.open_exec(sandbox.id, ExecRequest(cmd=["python3", "-c", serve], detach=True)))
    node.run(server.close())

    async def ask(connect: object) -> bytes:
        for _ in range(200):
            try:
                reader, writer = await connect()  # type: ignore[operator]
                break
            except (OSError, InvalidState):
                await asyncio.sleep(0.02)
        writer.write(b"ping")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    assert node.run(ask(lambda: n.connect_host(sandbox.id, "t.sock"))) == b"PING"
    assert node.run(ask(lambda: n.connect(sandbox.id, 7070))) == b"PING"
    assert n.host_file_tail(sandbox.id, "t.log", 4) == b"tail"
    n.remove_host_file(sandbox.id, "t.log")
    assert n.host_file_tail(sandbox.id, "t.log", 4) == b""


def test_a_planted_link_in_the_host_directory_never_reads_a_host_file(node, sandbox, tmp_path) -> None:
    """The sandbox's root owns /.cloche/host: an agent's log replaced by a symlink to a host
    file (or a FIFO) must read as nothing, not as the host file's tail (an agent's errors
    quote its log to the tenant)."""
    n: api.Node = node.rt
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    node.sh(sandbox.id, f"ln -sf {secret} /.cloche/host/linked.log && mkfifo /.cloche/host/fifo.log")
    assert n.host_file_tail(sandbox.id, "linked.log", 100) == b""
    assert n.host_file_tail(sandbox.id, "fifo.log", 100) == b""  # answers at once, never waits for a writer
    node.sh(sandbox.id, "rm -f /.cloche/host/linked.log /.cloche/host/fifo.log")


def test_lifecycle_usage_and_events_through_the_protocol(node) -> None:
    n: api.Node = node.rt
    events = Recorder()
    n.subscribe(events)
    expired: list[str] = []
    n.on_expire(expired.append)
    rec = node.run(n.create(SandboxSpec(limits=Limits(memory_mb=256)), use_pool=False))
    assert n.get(rec.id) is rec and rec in n.list() and rec in n.all_records()
    n.touch(rec.id)
    usage = n.usage(rec.id)
    assert usage.memory_bytes >= usage.anon_memory_bytes >= 0 and usage.pids >= 1
    disk = n.disk_usage(rec.id)
    assert 0 < disk.used_bytes < disk.total_bytes and disk.image_bytes > 0
    node.sh(rec.id, "echo kept > /workspace/f")
    assert node.run(n.set_env(rec.id, {"E": "1"})).spec.env == {"E": "1"}
    assert node.sh(rec.id, "echo $E").stdout == b"1\n"
    before = time.time()
    expires = node.run(n.set_timeout(rec.id, 3600)).expires_at
    assert expires is not None and before + 3600 <= expires <= time.time() + 3600
    assert node.run(n.resize(rec.id, Limits(memory_mb=300))).spec.limits.memory_mb == 300
    node.run(n.check_network(NetworkPolicy.from_json("none")))
    assert node.run(n.set_network(rec.id, NetworkPolicy.from_json("none"))).spec.network.public_json()
    assert isinstance(n.network_counters(), dict)
    assert n.network_stats(rec.id) is not None and n.network_stats("sb_missing") is None
    assert node.run(n.pause(rec.id)).state == "paused"
    assert node.run(n.resume(rec.id)).state == "running"
    manifest = node.run(n.snapshot(rec.id))
    assert n.snapshot_bytes(manifest) > 0
    fork = node.run(n.fork(rec.id))
    assert node.sh(fork.id, "cat /workspace/f").stdout == b"kept\n"
    node.run(n.kill(fork.id))
    copy = node.run(n.create(SandboxSpec(), snapshot=manifest))
    assert node.sh(copy.id, "cat /workspace/f").stdout == b"kept\n"
    node.run(n.kill(copy.id))
    assert node.run(n.stop(rec.id)).state == "stopped"
    assert node.run(n.start_sandbox(rec.id)).state == "running"
    assert node.run(n.hibernate(rec.id)).state == "hibernated"
    assert node.run(n.wake(rec.id)).state == "running"
    assert node.sh(rec.id, "cat /workspace/f").stdout == b"kept\n"
    node.run(n.set_timeout(rec.id, 0.5))
    for _ in range(100):
        if expired:
            break
        node.run(asyncio.sleep(0.1))
    assert expired == [rec.id]
    assert ("started", rec.id) in events.events and events.events[-1] == ("stopped", rec.id)
    assert n.collect_garbage(grace_s=0).manifests_deleted >= 0


def test_pool_and_templates_through_the_protocol(node, tmp_path) -> None:
    n: api.Node = node.rt
    status = n.pool_status()
    assert (status.template, status.size) == ("base", 0)
    n.set_pool_size(0)
    assert "base" in n.template_names() and n.template("base") == api.TemplateInfo("base", True)  # binds /usr
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    raw = buf.getvalue()
    imported = node.run(n.import_template("apitest", _chunks(raw[:100], raw[100:]), on_base=True))
    assert imported == api.TemplateInfo("apitest", True) and "apitest" in n.template_names()
    n.delete_template("apitest")
    assert "apitest" not in n.template_names()
