"""The state socket from inside real sandboxes: the static client (busybox template
too) and the Python module, each scoped to its own sandbox's namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.state.sandbox import SandboxStateSockets
from cloche.state.sqlite import SqliteEngine
from tests.conftest import Node

CLI = "/.cloche/bin/cloche-state"
PY = "import sys; sys.path.insert(0, '/.cloche/bin'); import cloche_state as cs; st = cs.StateClient(); "


class Env:
    def __init__(self, node: Node, engine: SqliteEngine, owners: dict[str, str], sockets: SandboxStateSockets) -> None:
        self.node, self.engine, self.owners, self.sockets = node, engine, owners, sockets

    def create(self, tenant: str, template: str = "base") -> str:
        rec = self.node.create(template=template)
        self.owners[rec.id] = tenant
        return rec.id


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, busybox_template: Path) -> Iterator[Env]:
    node = Node(tmp_path_factory.mktemp("state-node"))
    engine = SqliteEngine(tmp_path_factory.mktemp("state-db") / "state.db")
    node.run(engine.open())
    owners: dict[str, str] = {}
    sockets = SandboxStateSockets(engine, owners.get)
    node.rt.listeners.append(sockets)
    node.rt.templates.import_tar("busybox", str(busybox_template))
    yield Env(node, engine, owners, sockets)
    node.run(sockets.close())
    node.run(engine.close())
    node.close()


def sh(env: Env, sb: str, script: str, stdin: bytes | None = None):
    return env.node.exec(sb, ["/bin/sh", "-c", script], **({"stdin": stdin} if stdin is not None else {}))


def test_static_client_in_base_sandbox(env):
    a = env.create("tenant-1")
    r = sh(env, a, f"{CLI} put greeting hello && {CLI} get greeting && echo && {CLI} get -v greeting")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.decode().splitlines()[:2] == ["1", "hello"] and b"version 1" in r.stderr
    r = sh(env, a, f"printf 'from\\nstdin' | {CLI} put notes/a && {CLI} get notes/a")
    assert r.stdout.decode() == "1\nfrom\nstdin"
    r = sh(env, a, f"{CLI} put -m 1 greeting v2; {CLI} put -m 1 greeting v3; echo rc=$?")
    assert r.stdout.decode().splitlines() == ["2", "rc=1"] and b"condition failed" in r.stderr
    r = sh(env, a, f"{CLI} put -x greeting nope; echo rc=$?; {CLI} get missing; echo rc=$?")
    assert r.stdout.decode().splitlines() == ["rc=1", "rc=1"]
    r = sh(env, a, f"{CLI} ls; {CLI} ls notes/")
    assert r.stdout.decode().splitlines() == ["greeting\t2\t2", "notes/a\t1\t10", "notes/a\t1\t10"]
    r = sh(env, a, f"{CLI} append one && echo two | {CLI} append && {CLI} append -k k1 three && "
                   f"{CLI} append -k k1 three && {CLI} read && {CLI} read 2 && {CLI} trim 1 && {CLI} read")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["1", "2", "3", "3", "1\tone", "2\ttwo", "", "3\tthree",
                                              "3\tthree", "2", "2\ttwo", "", "3\tthree"]  # fmt: skip
    r = sh(env, a, f"{CLI} del greeting && {CLI} get greeting; echo rc=$?; {CLI} del greeting; echo rc=$?")
    assert r.stdout.decode().splitlines() == ["rc=1", "rc=1"]
    r = sh(env, a, f"{CLI} put 'bad key' x; echo rc=$?; {CLI} frobnicate; echo rc=$?; "
                   f"{CLI} -s /nonexistent get k; echo rc=$?")
    assert r.stdout.decode().splitlines() == ["rc=2", "rc=2", "rc=2"]
    assert b"invalid key" in r.stderr and b"cannot reach" in r.stderr
    # The host sees the same namespace: the sandbox's id, owned by its tenant.
    item = env.node.run(env.engine.kv_get("tenant-1", a, "notes/a"))
    assert item.value == b"from\nstdin"
    assert env.node.run(env.engine.kv_get("tenant-1", "other", "notes/a")) is None


def test_busybox_template_has_the_client(env):
    b = env.create("tenant-1", template="busybox")
    r = sh(env, b, f"{CLI} put k from-busybox && {CLI} get k && {CLI} append x && {CLI} read")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.decode() == "1\nfrom-busybox1\n1\tx\n"


def test_python_module(env):
    a = env.create("tenant-2")
    code = PY + (
        "v = st.put('k', b'\\x00\\xffbin'); print(v); print(st.get('k')); "
        "print(st.put('k', 'two', if_match=v));\n"
        "try:\n    st.put('k', 'x', if_match=1)\nexcept cs.Conflict as e:\n    print('conflict', e.current_version)\n"
        "print(st.append('a', idempotency_key='i'), st.append('a', idempotency_key='i'), st.append('b'));"
        "print(st.read(0)); print(st.list()); print(st.delete('k'), st.get('missing'))"
    )
    r = env.node.exec(a, ["python3", "-c", code])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "1", "(b'\\x00\\xffbin', 1)", "2", "conflict 2", "1 1 2", "[(1, b'a'), (2, b'b')]", "[('k', 2, 3)]",
        "True (None, None)",
    ]  # fmt: skip
    r = env.node.exec(a, ["python3", "/.cloche/bin/cloche_state.py", "get", "nope"])
    assert r.exit_code == 1 and b"not found" in r.stderr


def test_sandboxes_cannot_reach_each_other(env):
    a = env.create("tenant-3")
    b = env.create("tenant-3")
    c = env.create("tenant-4")
    assert sh(env, a, f"{CLI} put secret a-only && {CLI} append a-entry").exit_code == 0
    for other in (b, c):
        r = sh(env, other, f"{CLI} get secret; echo rc=$?; {CLI} read; {CLI} ls")
        assert r.stdout.decode() == "rc=1\n"
    # Naming the other sandbox's namespace on the wire is refused.
    code = PY + ("\nimport socket, struct\ns = socket.socket(socket.AF_UNIX); s.connect(st.path)\n"
                 f"fields = [b'get', b'{a}', b'secret']\n"
                 f"p = b''.join(struct.pack('>I', len(f)) + f for f in fields)\n"
                 f"s.sendall(struct.pack('>I', len(p)) + p); print(s.recv(4096))")  # fmt: skip
    r = env.node.exec(b, ["python3", "-c", code])
    assert b"forbidden" in r.stdout and b"a-only" not in r.stdout, r.stdout + r.stderr
    # Its own socket is the only one it can see: the host dir holds just that.
    r = sh(env, b, "ls -a /.cloche/host; ls /run/cloche 2>&1; echo rc=$?")
    assert "state.sock" in r.stdout.decode() and a not in r.stdout.decode()
    # The sandbox owns /.cloche/host; a symlink it plants where the socket goes must not
    # make the host touch what it points to when the socket is bound again.
    victim = env.node.rt.host_dir(b).parent / "victim"
    victim.write_text("host file")
    os.chmod(victim, 0o600)
    r = sh(env, b, f"rm /.cloche/host/state.sock && ln -s {victim} /.cloche/host/state.sock; echo rc=$?")
    assert r.stdout == b"rc=0\n"
    env.node.run(env.sockets.sandbox_started(env.node.rt.get(b), env.node.rt.host_dir(b)))
    assert victim.stat().st_mode & 0o777 == 0o600 and victim.read_text() == "host file"
    assert sh(env, b, f"{CLI} put k v").exit_code == 0


def test_socket_follows_the_sandbox_lifecycle(env):
    a = env.create("tenant-5")
    host_sock = env.node.rt.host_dir(a) / "state.sock"
    assert sh(env, a, f"{CLI} put k before-stop").exit_code == 0
    assert host_sock.exists()
    env.node.run(env.node.rt.stop(a))
    assert not host_sock.exists()
    env.node.run(env.node.rt.start_sandbox(a))
    r = sh(env, a, f"{CLI} get k")
    assert r.stdout == b"before-stop"
    env.node.kill(a)
    # The namespace outlives the sandbox (the tenant reads it over HTTP as /v1/state/<id>).
    assert env.node.run(env.engine.kv_get("tenant-5", a, "k")).value == b"before-stop"


def test_named_namespace_shared_by_grant(env):
    a = env.create("tenant-6")
    b = env.create("tenant-6")
    r = sh(env, a, f"{CLI} -n team put plan v1; echo rc=$?")
    assert r.stdout == b"rc=2\n" and b"not granted" in r.stderr
    env.node.run(env.engine.grant("tenant-6", "team", a))
    env.node.run(env.engine.grant("tenant-6", "team", b))
    assert sh(env, a, f"{CLI} -n team put plan v1 && {CLI} -n team append started").exit_code == 0
    r = env.node.exec(b, ["python3", "-c", PY.replace("cs.StateClient()", "cs.StateClient(namespace='team')")
                          + "print(st.get('plan'), st.read())"])  # fmt: skip
    assert r.stdout.decode().strip() == "(b'v1', 1) [(1, b'started')]", r.stderr
    # Its own namespace stays separate from the named one.
    assert sh(env, b, f"{CLI} get plan; echo rc=$?").stdout == b"rc=1\n"
    env.node.run(env.engine.revoke("tenant-6", "team", b))
    r = sh(env, b, f"{CLI} -n team get plan; echo rc=$?")
    assert r.stdout == b"rc=2\n" and b"not granted" in r.stderr
    # A sandbox of another tenant cannot use the name, even with a grant in its own tenant.
    c = env.create("tenant-7")
    env.node.run(env.engine.grant("tenant-7", "team", c))
    assert sh(env, c, f"{CLI} -n team get plan; echo rc=$?").stdout == b"rc=1\n"
    # The named namespace outlives the sandboxes: a new one, once granted, sees it all.
    env.node.kill(a)
    env.node.kill(b)
    d = env.create("tenant-6")
    env.node.run(env.engine.grant("tenant-6", "team", d))
    assert sh(env, d, f"{CLI} -n team get plan").stdout == b"v1"
