"""`e2b.Sandbox` (the sync SDK class) against cloche: lifecycle, commands, PTY, files,
tenancy, and the same sandbox seen through cloche's own API both ways."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    FileType,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)
from e2b.sandbox.commands.command_handle import PtySize

from tests.e2b.conftest import E2bEnv


@pytest.fixture(scope="module")
def sbx(e2b: E2bEnv):
    sandbox = Sandbox.create(timeout=300, metadata={"suite": "sync"}, envs={"SUITE_VAR": "from-create"})
    yield sandbox
    sandbox.kill()


# ---- create and lifecycle -----------------------------------------------------------------


def test_create_with_template_timeout_metadata_envs(e2b: E2bEnv):
    before = datetime.now(UTC)
    with Sandbox.create(template="base", timeout=120, metadata={"user": "alice", "run": "1"},
                        envs={"GREETING": "hello"}) as s:  # fmt: skip
        info = s.get_info()
        assert info.sandbox_id == s.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"user": "alice", "run": "1"}
        assert info.state == SandboxState.RUNNING
        remaining = (info.end_at - before).total_seconds()
        assert 100 < remaining < 140
        assert info.cpu_count >= 1 and info.memory_mb > 0
        assert s.commands.run("echo $GREETING").stdout == "hello\n"
        assert s.is_running()
    assert not s.is_running()


def test_unknown_template_is_a_clear_error(e2b: E2bEnv):
    with pytest.raises(SandboxException) as exc:
        Sandbox.create(template="no-such-template-xyz")
    assert "no-such-template-xyz" in str(exc.value) and "not found" in str(exc.value)


def test_list_filters_and_pages(e2b: E2bEnv):
    tag = f"list-{time.time_ns()}"
    made = [Sandbox.create(timeout=120, metadata={"tag": tag, "i": str(i)}) for i in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=2)
        first = paginator.next_items()
        assert len(first) == 2 and paginator.has_next and paginator.next_token
        second = paginator.next_items()
        assert len(second) == 1 and not paginator.has_next
        ids = {s.sandbox_id for s in first + second}
        assert ids == {s.sandbox_id for s in made}
        one = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "i": "1"})).next_items()
        assert [s.sandbox_id for s in one] == [made[1].sandbox_id]
        made[0].pause()
        paused = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [s.sandbox_id for s in paused] == [made[0].sandbox_id]
        running = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.RUNNING])).next_items()
        assert {s.sandbox_id for s in running} == {made[1].sandbox_id, made[2].sandbox_id}
    finally:
        for s in made:
            s.kill()


def test_set_timeout_pause_connect_kill(e2b: E2bEnv):
    s = Sandbox.create(timeout=60)
    s.set_timeout(600)
    assert (s.get_info().end_at - datetime.now(UTC)).total_seconds() > 500
    s.files.write("/home/user/keep.txt", "kept across pause")
    s.commands.run("mkdir -p /home/user/dir && echo 42 > /home/user/dir/n")
    assert s.pause() is True
    assert Sandbox.get_info(s.sandbox_id).state == SandboxState.PAUSED
    assert not s.is_running()
    assert s.pause() is False  # already paused
    again = Sandbox.connect(s.sandbox_id)
    assert again.sandbox_id == s.sandbox_id
    assert again.is_running()
    assert again.files.read("/home/user/keep.txt") == "kept across pause"
    assert again.commands.run("cat /home/user/dir/n").stdout == "42\n"
    assert again.get_info().state == SandboxState.RUNNING
    assert again.connect() is again  # a running sandbox: 200
    assert again.kill() is True
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(s.sandbox_id)
    assert Sandbox.kill(s.sandbox_id) is False
    assert not again.is_running()


# ---- commands ---------------------------------------------------------------------------------


def test_foreground_command_with_streaming_callbacks(sbx: Sandbox):
    out, err = [], []
    r = sbx.commands.run("for i in 1 2 3; do echo out$i; echo err$i >&2; done; echo $SUITE_VAR",
                         on_stdout=out.append, on_stderr=err.append)  # fmt: skip
    assert r.exit_code == 0
    assert r.stdout == "out1\nout2\nout3\nfrom-create\n"
    assert r.stderr == "err1\nerr2\nerr3\n"
    assert "".join(out) == r.stdout and "".join(err) == r.stderr


def test_streaming_arrives_before_the_command_ends(sbx: Sandbox):
    stamps = []
    sbx.commands.run("echo first; sleep 0.5; echo second", on_stdout=lambda s: stamps.append((time.monotonic(), s)))
    text = "".join(s for _, s in stamps)
    assert text == "first\nsecond\n"
    assert stamps[-1][0] - stamps[0][0] > 0.3


def test_exit_code_user_cwd_env(sbx: Sandbox):
    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("echo oops >&2; exit 7")
    assert exc.value.exit_code == 7 and exc.value.stderr == "oops\n"
    assert sbx.commands.run("id -u; pwd; echo $HOME").stdout == "1000\n/home/user\n/home/user\n"
    assert sbx.commands.run("id -u; pwd", user="root").stdout == "0\n/root\n"
    assert sbx.commands.run("pwd; echo $X", cwd="/tmp", envs={"X": "y"}).stdout == "/tmp\ny\n"


def test_background_stdin_list_connect_kill(sbx: Sandbox):
    cat = sbx.commands.run("cat", background=True, stdin=True)
    listed = {p.pid: p for p in sbx.commands.list()}
    assert cat.pid in listed and listed[cat.pid].args == ["-l", "-c", "cat"]
    sbx.commands.send_stdin(cat.pid, "line one\n")
    cat.send_stdin(b"line two\n")
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "line one\nline two\n"

    ticks = sbx.commands.run("for i in 1 2 3 4; do echo t$i; sleep 0.2; done", background=True)
    ticks.disconnect()
    attached = sbx.commands.connect(ticks.pid)
    result = attached.wait()
    assert result.exit_code == 0 and "t4\n" in result.stdout

    sleeper = sbx.commands.run("sleep 300", background=True)
    assert sleeper.kill() is True
    with pytest.raises(CommandExitException) as exc:
        sleeper.wait()
    assert exc.value.exit_code == -1 and "killed" in (exc.value.error or "")
    assert sbx.commands.kill(sleeper.pid) is False
    assert sleeper.pid not in {p.pid for p in sbx.commands.list()}


def test_stream_input(sbx: Sandbox):
    h = sbx.commands.run("wc -c", background=True, stdin=True)
    sbx.commands.stream_input(h.pid, [b"x" * 1000, "y" * 24, b"\n"])
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout.strip() == "1025"


def test_command_timeout_kills_it(sbx: Sandbox):
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - the SDK's timeout or the kill, whichever lands first
        sbx.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    time.sleep(0.3)
    assert not [p for p in sbx.commands.list() if "sleep 30" in " ".join(p.args)]


def test_pty(sbx: Sandbox):
    chunks: list[bytes] = []
    pty = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(pty.pid, PtySize(rows=40, cols=120))
    sbx.pty.send_stdin(pty.pid, b"stty size; echo pty-$((6*7))\nexit\n")
    result = pty.wait(on_pty=chunks.append)
    text = b"".join(chunks)
    assert result.exit_code == 0
    assert b"40 120" in text and b"pty-42" in text


# ---- files ------------------------------------------------------------------------------------


def test_files_write_read_list_exists(sbx: Sandbox):
    info = sbx.files.write("/home/user/notes/a.txt", "hello")
    assert (info.name, info.path, info.type) == ("a.txt", "/home/user/notes/a.txt", FileType.FILE)
    assert sbx.files.read("/home/user/notes/a.txt") == "hello"
    assert sbx.files.read("notes/a.txt") == "hello"  # relative to the user's home
    data = bytes(range(256)) * 100
    sbx.files.write("notes/b.bin", data)
    assert bytes(sbx.files.read("notes/b.bin", format="bytes")) == data
    assert b"".join(sbx.files.read("notes/b.bin", format="stream")) == data
    written = sbx.files.write_files([{"path": "notes/c.txt", "data": "c"}, {"path": "/tmp/d.txt", "data": b"d"}])
    assert [w.path for w in written] == ["/home/user/notes/c.txt", "/tmp/d.txt"]
    entries = {e.name: e for e in sbx.files.list("/home/user/notes")}
    assert set(entries) == {"a.txt", "b.bin", "c.txt"}
    assert entries["b.bin"].size == len(data) and entries["a.txt"].owner == "user"
    assert entries["a.txt"].permissions == "-rw-r--r--" and entries["a.txt"].type == FileType.FILE
    assert sbx.files.exists("/home/user/notes/a.txt") and sbx.files.exists("/home/user/notes")
    assert not sbx.files.exists("/home/user/notes/zzz")
    assert sbx.commands.run("cat notes/a.txt; echo; stat -c %U notes/a.txt").stdout == "hello\nuser\n"
    root_info = sbx.files.write("/root/secret", "r", user="root")
    assert sbx.files.get_info(root_info.path, user="root").owner == "root"


def test_files_gzip_and_octet_stream(sbx: Sandbox):
    data = b"compressible " * 50_000
    sbx.files.write("/home/user/gz.bin", data, gzip=True)
    assert bytes(sbx.files.read("/home/user/gz.bin", format="bytes", gzip=True)) == data
    sbx.files.write("/home/user/oct.bin", [b"a" * 10, b"b" * 10])  # an iterable streams as octet-stream
    assert sbx.files.read("/home/user/oct.bin") == "a" * 10 + "b" * 10


def test_files_make_dir_rename_remove_info(sbx: Sandbox):
    assert sbx.files.make_dir("/home/user/tree/x/y") is True
    assert sbx.files.make_dir("/home/user/tree/x/y") is False
    sbx.files.write("/home/user/tree/x/y/f.txt", "f")
    deep = sbx.files.list("/home/user/tree", depth=3)
    assert {e.path for e in deep} == {"/home/user/tree/x", "/home/user/tree/x/y", "/home/user/tree/x/y/f.txt"}
    moved = sbx.files.rename("/home/user/tree/x/y/f.txt", "/home/user/tree/g.txt")
    assert moved.path == "/home/user/tree/g.txt" and moved.type == FileType.FILE
    assert sbx.files.read("/home/user/tree/g.txt") == "f"
    info = sbx.files.get_info("/home/user/tree/x")
    assert info.type == FileType.DIR and info.owner == "user" and info.modified_time.year >= 2024
    sbx.commands.run("ln -s /home/user/tree/g.txt /home/user/tree/link")
    link = sbx.files.get_info("/home/user/tree/link")
    assert link.type == FileType.SYMLINK and link.symlink_target == "/home/user/tree/g.txt"
    sbx.files.remove("/home/user/tree/x")
    assert not sbx.files.exists("/home/user/tree/x")
    sbx.files.remove("/home/user/tree/never-existed")  # like envd: removing a missing path is fine


def test_files_errors_are_the_sdks_exceptions(sbx: Sandbox):
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/missing.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.list("/home/user/missing-dir")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info("/home/user/missing")
    with pytest.raises(FileNotFoundException):
        sbx.files.rename("/home/user/missing", "/home/user/other")
    with pytest.raises(InvalidArgumentException):
        sbx.files.read("/home/user")  # a directory


def test_file_metadata_and_signed_urls(sbx: Sandbox, e2b: E2bEnv):
    info = sbx.files.write("/home/user/meta.txt", "m", metadata={"Origin": "test"})
    assert info.metadata == {"origin": "test"}
    assert sbx.files.get_info("/home/user/meta.txt").metadata == {"origin": "test"}
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
    url = sbx.download_url("/home/user/meta.txt")
    assert httpx.get(url, headers=headers).content == b"m"
    up = sbx.upload_url("/home/user/uploaded.txt")
    r = httpx.post(up, headers=headers, files={"file": ("uploaded.txt", b"via signed url")})
    assert r.status_code == 200, r.text
    assert sbx.files.read("/home/user/uploaded.txt") == "via signed url"
    bad = url.replace("signature=v1_", "signature=v1_x")
    assert httpx.get(bad, headers=headers).status_code == 401


def test_watch_dir(sbx: Sandbox):
    sbx.files.make_dir("/home/user/watched")
    handle = sbx.files.watch_dir("/home/user/watched")
    try:
        sbx.files.write("/home/user/watched/new.txt", "1")
        time.sleep(0.6)
        events = handle.get_new_events()
        assert ("new.txt", "create") in {(e.name, e.type.value) for e in events}
        sbx.files.remove("/home/user/watched/new.txt")
        time.sleep(0.6)
        assert ("new.txt", "remove") in {(e.name, e.type.value) for e in handle.get_new_events()}
    finally:
        handle.stop()


# ---- tenancy and cloche's own API -------------------------------------------------------------


def test_another_tenants_sandbox_is_not_found(sbx: Sandbox, e2b: E2bEnv):
    _, other_key = e2b.server.tenant()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id, api_key=other_key)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, api_key=other_key)
    assert Sandbox.kill(sbx.sandbox_id, api_key=other_key) is False
    assert sbx.sandbox_id not in {s.sandbox_id for s in Sandbox.list(api_key=other_key).next_items()}
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="ck_not-a-key")
    # the in-sandbox protocol needs the sandbox's own access token
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": "wrong"}
    r = httpx.post(f"{e2b.url}/process.Process/List", json={}, headers=headers)
    assert r.status_code == 401
    r = httpx.get(f"{e2b.url}/files", params={"path": "/etc/hostname"}, headers=headers)
    assert r.status_code == 401
    assert sbx.is_running()


def test_e2b_sandbox_is_visible_in_cloches_api(sbx: Sandbox, e2b: E2bEnv):
    sbx.files.write("/home/user/from-e2b.txt", "written by e2b")
    with e2b.server.client(e2b.key) as c:
        listed = {s["id"]: s for s in c.get("/v1/sandboxes").json()["items"]}
        assert listed[sbx.sandbox_id]["metadata"] == {"suite": "sync"}
        r = c.post(f"/v1/sandboxes/{sbx.sandbox_id}/exec", json={"cmd": "cat /home/user/from-e2b.txt"})
        assert r.json()["stdout"] == "written by e2b"
        c.put(f"/v1/sandboxes/{sbx.sandbox_id}/files", params={"path": "/home/user/from-cloche.txt"},
              content=b"written by cloche").raise_for_status()  # fmt: skip
    assert sbx.files.read("/home/user/from-cloche.txt") == "written by cloche"


def test_cloche_sandbox_is_usable_through_e2b(e2b: E2bEnv):
    import cloche

    with cloche.Client(e2b.url, e2b.key) as client, client.sandboxes.create(metadata={"made": "cloche"}) as native:
        native.files.write("/workspace/native.txt", "native")
        s = Sandbox.connect(native.id)
        assert s.files.read("/workspace/native.txt") == "native"
        assert s.commands.run("cat /workspace/native.txt", user="root").stdout == "native"
        info = s.get_info()
        assert info.metadata == {"made": "cloche"} and info.state == SandboxState.RUNNING
        assert native.id in {x.sandbox_id for x in Sandbox.list().next_items()}
        s.files.write("/workspace/back.txt", "from e2b", user="root")
        assert native.files.read_text("/workspace/back.txt") == "from e2b"


def test_commands_end_with_sandbox_not_running_when_the_sandbox_goes(e2b: E2bEnv):
    from e2b import SandboxNotRunningException

    s = Sandbox.create(timeout=120)
    paused_during = s.commands.run("sleep 300", background=True)
    s.pause()
    with pytest.raises(SandboxNotRunningException):
        paused_during.wait()
    s = Sandbox.connect(s.sandbox_id)
    killed_during = s.commands.run("sleep 300", background=True)
    s.kill()
    with pytest.raises(SandboxNotRunningException):
        killed_during.wait()


def test_fork_snapshots_metrics(sbx: Sandbox, e2b: E2bEnv):
    sbx.files.write("/home/user/forked.txt", "same files")
    forks = sbx.fork(count=2)
    try:
        assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks)
        assert {f.sandbox_id for f in forks}.isdisjoint({sbx.sandbox_id})
        assert all(f.files.read("/home/user/forked.txt") == "same files" for f in forks)
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                f.kill()
    snap = sbx.create_snapshot(name=f"snap-{time.time_ns()}")
    assert snap.snapshot_id in {x.snapshot_id for x in Sandbox.list_snapshots().next_items()}
    with Sandbox.create(snap.snapshot_id, timeout=60) as from_snap:
        assert from_snap.files.read("/home/user/forked.txt") == "same files"
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    sbx.get_metrics()
    metrics = sbx.get_metrics()
    assert metrics and metrics[-1].mem_total > 0 and metrics[-1].cpu_count >= 1


def test_v1_routes_of_older_sdks(e2b: E2bEnv):
    headers = {"X-API-KEY": e2b.key}
    with httpx.Client(base_url=e2b.url, headers=headers, timeout=60) as c:
        created = c.post("/sandboxes", json={"templateID": "base", "timeout": 60, "metadata": {"v": "1"}})
        assert created.status_code == 201, created.text
        sid = created.json()["sandboxID"]
        assert created.json()["envdAccessToken"] and created.json()["envdVersion"]
        assert sid in {s["sandboxID"] for s in c.get("/sandboxes", params={"metadata": "v=1"}).json()}
        assert c.post(f"/sandboxes/{sid}/refreshes", json={"duration": 120}).status_code == 204
        assert c.post(f"/sandboxes/{sid}/resume", json={}).status_code == 409  # it runs
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 204
        assert sid not in {s["sandboxID"] for s in c.get("/sandboxes").json()}  # v1 lists running ones
        resumed = c.post(f"/sandboxes/{sid}/resume", json={"timeout": 60})
        assert resumed.status_code == 201 and resumed.json()["sandboxID"] == sid
        assert c.post(f"/sandboxes/{sid}/connect", json={"timeout": 60}).status_code == 200
        bearer = httpx.get(f"{e2b.url}/sandboxes/{sid}", headers={"Authorization": f"Bearer {e2b.key}"})
        assert bearer.status_code == 200 and bearer.json()["state"] == "running"
        assert c.delete(f"/sandboxes/{sid}").status_code == 204
        missing = c.get(f"/sandboxes/{sid}")
        assert missing.status_code == 404 and missing.json()["code"] == 404


def test_idempotent_create(e2b: E2bEnv):
    key = f"idem-{time.time_ns()}"
    first = Sandbox.create(timeout=60, idempotency_key=key)
    try:
        again = Sandbox.create(timeout=60, idempotency_key=key)
        assert again.sandbox_id == first.sandbox_id
        assert again.commands.run("echo same").stdout == "same\n"
    finally:
        first.kill()
    after_kill = Sandbox.create(timeout=60, idempotency_key=key)
    try:
        assert after_kill.sandbox_id != first.sandbox_id
    finally:
        after_kill.kill()
