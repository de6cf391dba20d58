"""The Python SDK (`cloche.Client` / `cloche.AsyncClient`) against a real `cloche up`."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import time
import uuid
from datetime import UTC, datetime

import pytest

from cloche import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from cloche.client import ExecExit, ExecOutput, ExecStart, Sandbox
from tests.integration.conftest import Server
from tests.sdk_faces import both_faces, face_client


@pytest.fixture(scope="module")
def client(server: Server, request: pytest.FixtureRequest):
    """A client of the sync face, or of the face a ``@both_faces`` test gives."""
    _, key = server.tenant()
    with face_client(getattr(request, "param", "sync"), server.url, key) as c:
        yield c


@pytest.fixture(scope="module")
def sbx(client: Client):
    """One running sandbox shared by tests that do not change its lifecycle."""
    with client.sandboxes.create() as s:
        yield s


def _tar(members: dict[str, bytes], dirs: tuple[str, ...] = (), gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- service and sandboxes -----------------------------------------------------------------


def test_health_needs_no_key(server: Server):
    with Client(server.url, api_key="") as c:
        assert c.health().status == "ok"


def test_url_and_key_come_from_the_environment(server: Server, monkeypatch):
    _, key = server.tenant()
    monkeypatch.setenv("CLOCHE_URL", server.url)
    monkeypatch.setenv("CLOCHE_API_KEY", key)
    with Client() as c:
        assert c.url == server.url
        assert c.sandboxes.list() == []


@both_faces
def test_create_runs_python(sbx):
    assert sbx.state == "running" and sbx.id.startswith("sb")
    r = sbx.exec(["python3", "-c", "print(1+1)"])
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (0, "2\n", "", True)
    assert not r.timed_out and not r.truncated and r.duration_ms > 0


def test_exec_shell_string_exit_code_and_stderr(sbx):
    r = sbx.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)


def test_exec_env_cwd_stdin(sbx):
    r = sbx.exec(["sh", "-c", 'echo "$GREETING"; pwd; cat'], env={"GREETING": "hi"}, cwd="/tmp", stdin="from-stdin")
    assert r.stdout == "hi\n/tmp\nfrom-stdin"


def test_exec_timeout_is_reported(sbx):
    started = time.monotonic()
    r = sbx.exec("sleep 30", timeout_s=0.5)
    assert r.timed_out and not r.ok
    assert time.monotonic() - started < 10


@both_faces
def test_create_applies_limits_env_and_metadata(client: Client):
    tag = uuid.uuid4().hex[:8]
    with client.sandboxes.create(
        cpu=0.5, memory_mb=256, timeout_s=600, metadata={"tag": tag}, env={"FROM_CREATE": "yes"}
    ) as s:
        info = s.info
        assert (info.cpu, info.memory_mb, info.timeout_s, info.metadata) == (0.5, 256, 600, {"tag": tag})
        assert isinstance(info.created_at, datetime) and info.expires_at is not None
        assert info.expires_at > datetime.now(UTC)
        assert s.exec("echo $FROM_CREATE").stdout == "yes\n"
        listed = client.sandboxes.list(metadata={"tag": tag})
        assert [x.id for x in listed] == [s.id]
        assert client.sandboxes.list(metadata={"tag": "other"}) == []


def test_create_with_existing_name_returns_that_sandbox(client: Client):
    name = f"agent-{uuid.uuid4().hex[:8]}"
    with client.sandboxes.create(name=name) as first:
        again = client.sandboxes.create(name=name)
        assert again.id == first.id and again.name == name


@both_faces
def test_get_list_and_refresh(client: Client, sbx):
    assert client.sandboxes.get(sbx.id).info.id == sbx.id
    assert sbx.id in [s.id for s in client.sandboxes.list(state="running")]
    assert sbx.id not in [s.id for s in client.sandboxes.list(state="paused")]
    assert sbx.refresh() is sbx and sbx.state == "running"


@both_faces
def test_pause_resume_and_connect(client: Client):
    with client.sandboxes.create() as s:
        s.exec("echo kept > /workspace/f")
        assert s.pause().state == "paused"
        assert client.sandboxes.get(s.id).state == "paused"
        assert s.resume().state == "running"
        assert s.files.read_text("/workspace/f") == "kept\n"
        s.pause()
        again = client.sandboxes.connect(s.id)  # connect resumes a paused sandbox
        assert again.state == "running" and again == s


def test_set_timeout_moves_expiry(client: Client):
    with client.sandboxes.create(timeout_s=60) as s:
        before = s.info.expires_at
        s.set_timeout(3600)
        assert s.info.expires_at is not None and before is not None
        assert (s.info.expires_at - before).total_seconds() > 3000


@both_faces
def test_context_manager_kills_sandbox(client: Client):
    with client.sandboxes.create() as s:
        sid = s.id
        assert s.exec("true").ok
    with pytest.raises(NotFound):
        client.sandboxes.get(sid)


def test_context_manager_kills_sandbox_on_error(client: Client):
    with pytest.raises(ZeroDivisionError), client.sandboxes.create() as s:
        sid = s.id
        1 / 0  # noqa: B018
    with pytest.raises(NotFound):
        client.sandboxes.get(sid)


@both_faces
def test_kill_twice(client: Client):
    s = client.sandboxes.create()
    s.kill()
    with pytest.raises(NotFound):
        s.kill()
    s.kill(missing_ok=True)


# --- exec streaming and PTY ----------------------------------------------------------------


@both_faces
def test_exec_stream_yields_start_output_then_exit(sbx):
    events = list(sbx.exec_stream("echo one; echo two >&2; echo three; exit 4"))
    assert isinstance(events[0], ExecStart) and events[0].pid
    assert isinstance(events[-1], ExecExit) and events[-1].exit_code == 4
    out = "".join(e.data for e in events if isinstance(e, ExecOutput) and e.type == "stdout")
    err = "".join(e.data for e in events if isinstance(e, ExecOutput) and e.type == "stderr")
    assert (out, err) == ("one\nthree\n", "two\n")
    assert all(isinstance(e, ExecOutput) for e in events[1:-1])


def test_exec_stream_delivers_output_before_the_command_ends(sbx):
    seen: list[tuple[str, float]] = []
    for event in sbx.exec_stream(["sh", "-c", "echo first; sleep 1.5; echo second"]):
        if isinstance(event, ExecOutput):
            seen.append((event.data, time.monotonic()))
        elif isinstance(event, ExecExit):
            seen.append(("<exit>", time.monotonic()))
    assert seen[0][0] == "first\n" and seen[-1][0] == "<exit>"
    assert seen[-1][1] - seen[0][1] > 1.0  # "first" arrived while the command still ran


@both_faces
def test_exec_stream_can_be_abandoned(sbx):
    stream = sbx.exec_stream("yes | head -c 10000000")
    first = next(e for e in stream if isinstance(e, ExecOutput))
    assert first.data.startswith("y\n")
    stream.close()  # type: ignore[attr-defined]
    assert sbx.exec("echo still-fine").stdout == "still-fine\n"


def test_pty_runs_an_interactive_shell(sbx):
    output = b""
    exit_frame = None
    with sbx.pty(cmd="/bin/sh", rows=30, cols=100) as ws:
        ws.send(b"stty size; echo $((6*7)); exit 5\n")
        for message in ws:
            if isinstance(message, bytes):
                output += message
            else:
                exit_frame = json.loads(message)
    assert b"30 100" in output and b"42" in output
    assert exit_frame == {"type": "exit", "exit_code": 5}


# --- files and archives ------------------------------------------------------------------


def test_write_read_roundtrip(sbx):
    data = bytes(range(256)) * 1000
    result = sbx.files.write("/workspace/bin.dat", data)
    assert (result.path, result.size) == ("/workspace/bin.dat", len(data))
    assert sbx.files.read("/workspace/bin.dat") == data
    sbx.files.write("/workspace/hello.txt", "héllo\n")
    assert sbx.files.read_text("/workspace/hello.txt") == "héllo\n"
    assert sbx.exec(["cat", "/workspace/hello.txt"]).stdout == "héllo\n"


@both_faces
def test_write_streams_a_file_object(sbx):
    data = b"0123456789abcdef" * 70000  # > 1 MiB, several chunks
    sent: list[int] = []
    sbx.files.write("/workspace/stream.bin", io.BytesIO(data), on_progress=sent.append)
    assert sum(sent) == len(data) and len(sent) > 1
    sink = io.BytesIO()
    assert sbx.files.download("/workspace/stream.bin", sink) == len(data)
    assert sink.getvalue() == data


def test_relative_paths_are_under_workspace(sbx):
    assert sbx.files.write("rel.txt", "x").path == "/workspace/rel.txt"
    assert sbx.files.read("/workspace/rel.txt") == b"x"


@both_faces
def test_list_stat_mkdir_rename_remove(sbx):
    sbx.files.mkdir("/workspace/d")
    sbx.files.write("/workspace/d/a.txt", "aaa")
    sbx.exec("ln -s a.txt /workspace/d/link")
    entries = {e.name: e for e in sbx.files.list("/workspace/d")}
    assert set(entries) == {"a.txt", "link"}
    assert entries["a.txt"].is_file and entries["a.txt"].size == 3 and entries["a.txt"].path == "/workspace/d/a.txt"
    assert entries["link"].type == "symlink" and entries["link"].target == "a.txt"
    st = sbx.files.stat("/workspace/d")
    assert st.is_dir and st.mode == 0o755
    moved = sbx.files.rename("/workspace/d/a.txt", "/workspace/d/b.txt")
    assert moved.path == "/workspace/d/b.txt" and moved.size == 3
    assert not sbx.files.exists("/workspace/d/a.txt") and sbx.files.exists("/workspace/d/b.txt")
    with pytest.raises(Conflict):
        sbx.files.remove("/workspace/d")  # not empty
    sbx.files.remove("/workspace/d", recursive=True)
    assert not sbx.files.exists("/workspace/d")


@both_faces
def test_read_and_list_reject_the_wrong_kind(sbx):
    sbx.files.write("/workspace/plain.txt", "p")
    with pytest.raises(InvalidRequest):
        sbx.files.read("/workspace")
    with pytest.raises(InvalidRequest):
        sbx.files.list("/workspace/plain.txt")
    with pytest.raises(NotFound):
        sbx.files.read("/workspace/missing.txt")


@both_faces
def test_tar_upload_download_roundtrip(sbx):
    files = {"proj/main.py": b"print('hi')\n", "proj/pkg/data.bin": bytes(range(256))}
    report = sbx.upload_tar("/workspace/up", _tar(files, dirs=("proj", "proj/pkg")))
    assert (report.files, report.dirs, report.skipped) == (2, 2, [])
    assert sbx.exec(["python3", "/workspace/up/proj/main.py"]).stdout == "hi\n"
    with tarfile.open(fileobj=io.BytesIO(sbx.download_tar("/workspace/up")), mode="r:*") as tar:
        got = {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert got == files


def test_tar_upload_from_file_object_gz_and_unsafe_members(sbx):
    body = io.BytesIO(_tar({"ok.txt": b"ok", "../escape.txt": b"bad"}, gz=True))
    report = sbx.upload_tar("/workspace/gz", body)
    assert report.files == 1
    assert [s.name for s in report.skipped] == ["../escape.txt"]
    assert sbx.files.read("/workspace/gz/ok.txt") == b"ok"
    assert not sbx.files.exists("/workspace/escape.txt")


# --- errors, tenancy, admin ----------------------------------------------------------------


@both_faces
def test_bogus_id_is_not_found(client: Client):
    with pytest.raises(NotFound) as info:
        client.sandboxes.get("sb_doesnotexist")
    assert info.value.status == 404 and info.value.code == "not_found"
    with pytest.raises(NotFound):
        client.sandboxes.connect("sb_doesnotexist")


def test_garbage_key_is_unauthorized(server: Server):
    with Client(server.url, "ck_garbage") as c, pytest.raises(Unauthorized) as info:
        c.sandboxes.list()
    assert info.value.status == 401


def test_other_tenants_sandbox_is_not_found(server: Server, sbx):
    _, other_key = server.tenant()
    with Client(server.url, other_key) as other:
        with pytest.raises(NotFound):
            other.sandboxes.get(sbx.id)
        with pytest.raises(NotFound):
            Sandbox(other, sbx.info).exec("true")
        with pytest.raises(NotFound):
            Sandbox(other, sbx.info).files.read("/etc/hostname")
        with pytest.raises(NotFound):
            Sandbox(other, sbx.info).kill()
    assert sbx.exec("true").ok


@both_faces
def test_invalid_parameters_raise_invalid_request(client: Client):
    with pytest.raises(InvalidRequest) as info:
        client.sandboxes.create(cpu=-1)
    assert info.value.status == 422


def test_tenant_key_cannot_administer(client: Client):
    with pytest.raises(Forbidden):
        client.tenants.list()
    with pytest.raises(Forbidden):
        client.nodes.list()


def test_quota_exceeded(server: Server):
    _, key = server.tenant(max_sandboxes=1)
    with Client(server.url, key) as c, c.sandboxes.create():
        with pytest.raises(QuotaExceeded) as info:
            c.sandboxes.create()
        assert info.value.status == 429 and info.value.code == "quota_exceeded"


def test_admin_manages_tenants_and_keys(server: Server):
    with Client(server.url, server.admin_key) as admin:
        name = f"sdk-{uuid.uuid4().hex[:8]}"
        tenant = admin.tenants.create(name, max_sandboxes=3, max_cpu=2, max_memory_mb=2048)
        assert tenant.name == name and tenant.api_key
        listed = {t.id: t for t in admin.tenants.list()}
        assert listed[tenant.id].max_sandboxes == 3 and listed[tenant.id].max_memory_mb == 2048
        with pytest.raises(Conflict):
            admin.tenants.create(name)
        key = admin.tenants.create_key(tenant.id)
        with Client(server.url, key.api_key) as c:
            assert c.sandboxes.list() == []
            admin.tenants.revoke_key(tenant.id, key.id)
            with pytest.raises(Unauthorized):
                c.sandboxes.list()
        with pytest.raises(NotFound):
            admin.tenants.create_key("tn_missing")
        nodes = admin.nodes.list()
        assert nodes and nodes[0].capacity.cpu > 0 and nodes[0].capacity.memory_mb > 0


def test_rate_limited_carries_retry_after(tmp_path):
    srv = Server(tmp_path / "data", pool_size=0, env={"CLOCHE_RATE_PER_S": "0.5", "CLOCHE_RATE_BURST": "2"})
    srv.start()
    try:
        with Client(srv.url, srv.admin_key) as c, pytest.raises(RateLimited) as info:
            for _ in range(10):
                c.sandboxes.list()
        assert info.value.status == 429 and info.value.retry_after and info.value.retry_after > 0
    finally:
        srv.stop()


# --- async client --------------------------------------------------------------------------


def test_async_client_end_to_end(server: Server):
    _, key = server.tenant()

    async def scenario() -> None:
        async with AsyncClient(server.url, key) as client:
            assert (await client.health()).status == "ok"
            async with await client.sandboxes.create(metadata={"kind": "async"}) as s:
                sid = s.id
                r = await s.exec(["python3", "-c", "print(1+1)"])
                assert (r.exit_code, r.stdout) == (0, "2\n")
                events = [e async for e in s.exec_stream("echo a; echo b >&2; exit 2")]
                assert isinstance(events[0], ExecStart)
                assert isinstance(events[-1], ExecExit) and events[-1].exit_code == 2
                assert [(e.type, e.data) for e in events if isinstance(e, ExecOutput)] in (
                    [("stdout", "a\n"), ("stderr", "b\n")],
                    [("stderr", "b\n"), ("stdout", "a\n")],
                )
                await s.files.write("/workspace/x.txt", "async text")
                assert await s.files.read_text("/workspace/x.txt") == "async text"
                await s.files.write("/workspace/y.bin", io.BytesIO(b"\x00\x01" * 200000))
                assert (await s.files.stat("/workspace/y.bin")).size == 400000
                names = [e.name for e in await s.files.list("/workspace")]
                assert {"x.txt", "y.bin"} <= set(names)
                report = await s.upload_tar("/workspace/t", _tar({"f.txt": b"tar!"}))
                assert report.files == 1
                with tarfile.open(fileobj=io.BytesIO(await s.download_tar("/workspace/t"))) as tar:
                    member = next(m for m in tar.getmembers() if m.isfile())
                    assert tar.extractfile(member).read() == b"tar!"  # type: ignore[union-attr]
                assert (await s.pause()).state == "paused"
                assert (await s.resume()).state == "running"
                assert [x.id for x in await client.sandboxes.list(metadata={"kind": "async"})] == [sid]
                async with s.pty(cmd="/bin/sh") as ws:
                    await ws.send(b"echo pty-$((2+3)); exit 0\n")
                    chunks = [m async for m in ws]
                assert any(isinstance(m, bytes) and b"pty-5" in m for m in chunks)
            with pytest.raises(NotFound):
                await client.sandboxes.get(sid)
        async with AsyncClient(server.url, "ck_garbage") as bad:
            with pytest.raises(Unauthorized):
                await bad.sandboxes.list()

    asyncio.run(scenario())


def test_async_concurrent_execs(server: Server):
    _, key = server.tenant()

    async def scenario() -> list[str]:
        async with AsyncClient(server.url, key) as client, await client.sandboxes.create() as s:
            results = await asyncio.gather(*(s.exec(f"sleep 0.5; echo {i}") for i in range(5)))
            return [r.stdout for r in results]

    started = time.monotonic()
    assert asyncio.run(scenario()) == [f"{i}\n" for i in range(5)]
    assert time.monotonic() - started < 30
