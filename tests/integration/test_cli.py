"""The `cloche` CLI, run as a subprocess against a real `cloche up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from cloche import Client, NotFound
from tests.cli_zygote import run_cli
from tests.integration.conftest import Server


def cli(
    *args: str, url: str, key: str | None, input: bytes | str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cloche.cli ARGS` with CLOCHE_URL/CLOCHE_API_KEY set (tests/cli_zygote.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLOCHE_URL", "CLOCHE_API_KEY", "COLUMNS")}
    env.update(CLOCHE_URL=url, NO_COLOR="1")
    if key is not None:
        env["CLOCHE_API_KEY"] = key
    proc = run_cli(args, input=b"" if input is None else input, env=env, timeout=timeout)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def cli_bytes(*args: str, url: str, key: str) -> bytes:
    env = {**os.environ, "CLOCHE_URL": url, "CLOCHE_API_KEY": key}
    proc = run_cli(args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Tenant:
    """A fresh tenant plus a `run` helper bound to its key."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.id, self.key = server.tenant()

    def run(self, *args: str, input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
        return cli(*args, url=self.server.url, key=self.key, input=input)

    def ok(self, *args: str, input: bytes | str | None = None) -> str:
        proc = self.run(*args, input=input)
        assert proc.returncode == 0, f"{args}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def tenant(server: Server) -> Tenant:
    return Tenant(server)


@pytest.fixture(scope="module")
def sandbox_id(tenant: Tenant):
    sid = tenant.ok("sandbox", "create").strip()
    yield sid
    with Client(tenant.server.url, tenant.key) as c:
        try:
            c.sandboxes.get(sid).kill()
        except NotFound:
            pass


# --- help and version ----------------------------------------------------------------------

COMMANDS = [
    [],
    ["up"],
    ["health"],
    ["shell"],
    ["sandbox"],
    ["sandbox", "create"],
    ["sandbox", "ls"],
    ["sandbox", "get"],
    ["sandbox", "exec"],
    ["sandbox", "kill"],
    ["sandbox", "pause"],
    ["sandbox", "resume"],
    ["sandbox", "timeout"],
    ["files"],
    ["files", "get"],
    ["files", "put"],
    ["files", "ls"],
    ["files", "rm"],
    ["files", "mkdir"],
    ["files", "mv"],
    ["files", "upload"],
    ["files", "download"],
    ["tenant"],
    ["tenant", "create"],
    ["tenant", "ls"],
    ["tenant", "add-key"],
    ["tenant", "revoke-key"],
    ["node"],
    ["node", "ls"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cloche")
def test_every_command_has_help(command):
    proc = cli(*command, "--help", url="http://127.0.0.1:9", key=None)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    # A description line beyond the usage line.
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) > 3


def test_up_help_lists_its_options():
    out = cli("up", "--help", url="http://127.0.0.1:9", key=None).stdout
    for option in ("--data-dir", "--host", "--port", "--pool-size"):
        assert option in out


def test_version():
    proc = cli("--version", url="http://127.0.0.1:9", key=None)
    assert proc.returncode == 0 and proc.stdout.startswith("cloche ")


def test_health(server: Server):
    proc = cli("health", url=server.url, key=None)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok")


def test_unreachable_server_is_a_short_error():
    proc = cli("sandbox", "ls", url="http://127.0.0.1:9", key="k")
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_shell_completion_completes_commands():
    """`cloche --install-completion` hooks the shell to this protocol: the shell sends the
    words typed so far, the CLI answers with the candidates."""
    env = {**os.environ, "_CLOCHE_COMPLETE": "complete_bash", "COMP_WORDS": "cloche sandbox cr", "COMP_CWORD": "2"}
    run_as_cloche = "import sys; sys.argv[0] = 'cloche'; from cloche.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", run_as_cloche], capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stdout.split()) == (0, ["create"])
    assert "--install-completion" in cli("--help", url="http://127.0.0.1:9", key=None).stdout


# --- sandboxes ---------------------------------------------------------------------------


def test_create_prints_only_the_id(tenant: Tenant, sandbox_id: str):
    assert sandbox_id.startswith("sb") and sandbox_id.split() == [sandbox_id]


def test_create_json_with_options(tenant: Tenant):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = tenant.ok(
        "sandbox", "create", "--json", "--name", name, "--cpu", "0.5", "--memory-mb", "256",
        "--timeout", "600", "--env", "GREETING=hello", "-m", "team=blue",
    )  # fmt: skip
    info = json.loads(out)
    try:
        assert (info["name"], info["state"], info["cpu"], info["memory_mb"]) == (name, "running", 0.5, 256)
        assert info["metadata"] == {"team": "blue"} and info["expires_at"]
        r = tenant.run("sandbox", "exec", info["id"], "--", "sh", "-c", 'echo "$GREETING"')
        assert (r.returncode, r.stdout) == (0, "hello\n")
        # Same name again: the existing sandbox comes back.
        assert tenant.ok("sandbox", "create", "--name", name).strip() == info["id"]
    finally:
        tenant.ok("sandbox", "kill", info["id"])


def test_create_rejects_malformed_pairs(tenant: Tenant):
    proc = tenant.run("sandbox", "create", "--env", "NOEQUALS")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr


def test_ls_shows_a_table(tenant: Tenant, sandbox_id: str):
    out = tenant.ok("sandbox", "ls")
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["ID", "NAME", "STATE"]
    row = next(line for line in lines if line.startswith(sandbox_id))
    assert row.split()[2] == "running"
    assert sandbox_id not in tenant.ok("sandbox", "ls", "--state", "paused")
    listed = json.loads(tenant.ok("sandbox", "ls", "--json"))
    assert sandbox_id in [s["id"] for s in listed]


def test_get_shows_details(tenant: Tenant, sandbox_id: str):
    out = tenant.ok("sandbox", "get", sandbox_id)
    assert sandbox_id in out and "running" in out and "memory" in out
    assert json.loads(tenant.ok("sandbox", "get", sandbox_id, "--json"))["id"] == sandbox_id


def test_exec_runs_python(tenant: Tenant, sandbox_id: str):
    proc = tenant.run("sandbox", "exec", sandbox_id, "--", "python3", "-c", "print(1+1)")
    assert (proc.returncode, proc.stdout) == (0, "2\n")


def test_exec_propagates_exit_code_and_separates_streams(tenant: Tenant, sandbox_id: str):
    proc = tenant.run("sandbox", "exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (proc.returncode, proc.stdout) == (7, "out\n")
    assert "err\n" in proc.stderr


def test_exec_single_string_is_a_shell_line(tenant: Tenant, sandbox_id: str):
    proc = tenant.run("sandbox", "exec", sandbox_id, "--", "echo a b | wc -w")
    assert (proc.returncode, proc.stdout.strip()) == (0, "2")


def test_exec_options_and_stdin(tenant: Tenant, sandbox_id: str):
    proc = tenant.run(
        "sandbox", "exec", "--cwd", "/tmp", "-e", "X=1", "-i", sandbox_id, "--", "sh", "-c", 'pwd; echo "$X"; cat',
        input="piped",
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "/tmp\n1\npiped")


def test_exec_timeout(tenant: Tenant, sandbox_id: str):
    proc = tenant.run("sandbox", "exec", "--timeout", "0.5", sandbox_id, "--", "sleep", "30")
    assert proc.returncode != 0 and "timed out" in proc.stderr


def test_exec_on_unknown_sandbox_exits_125(tenant: Tenant):
    proc = tenant.run("sandbox", "exec", "sb_doesnotexist", "--", "true")
    assert proc.returncode == 125
    assert "not found" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_pause_resume_timeout_kill(tenant: Tenant):
    sid = tenant.ok("sandbox", "create").strip()
    assert tenant.ok("sandbox", "pause", sid).split() == [sid, "paused"]
    assert "paused" in tenant.ok("sandbox", "ls", "--state", "paused")
    assert tenant.ok("sandbox", "resume", sid).split() == [sid, "running"]
    assert "expires in" in tenant.ok("sandbox", "timeout", sid, "3600")
    tenant.ok("sandbox", "kill", sid)
    proc = tenant.run("sandbox", "get", sid)
    assert proc.returncode == 1 and "not_found" in proc.stderr


def test_garbage_key_is_rejected(server: Server):
    proc = cli("sandbox", "ls", url=server.url, key="ck_garbage")
    assert proc.returncode == 1 and "unauthorized" in proc.stderr and "Traceback" not in proc.stderr


# --- files -------------------------------------------------------------------------------


def test_files_put_get_roundtrip(tenant: Tenant, sandbox_id: str, tmp_path: Path):
    data = os.urandom(300_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    tenant.ok("files", "put", sandbox_id, str(src), "/workspace/cli/blob.bin")
    dst = tmp_path / "back.bin"
    tenant.ok("files", "get", sandbox_id, "/workspace/cli/blob.bin", "-o", str(dst))
    assert dst.read_bytes() == data
    assert (
        cli_bytes("files", "get", sandbox_id, "/workspace/cli/blob.bin", url=tenant.server.url, key=tenant.key) == data
    )
    # A destination ending in / (remote) or an existing directory (local) keeps the name.
    tenant.ok("files", "put", sandbox_id, str(src), "/workspace/cli2/")
    assert [e["name"] for e in json.loads(tenant.ok("files", "ls", sandbox_id, "/workspace/cli2", "--json"))] == [
        "blob.bin"
    ]
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    tenant.ok("files", "get", sandbox_id, "/workspace/cli2/blob.bin", "-o", str(outdir))
    assert (outdir / "blob.bin").read_bytes() == data


def test_files_put_from_stdin_and_get_to_stdout(tenant: Tenant, sandbox_id: str):
    tenant.ok("files", "put", sandbox_id, "-", "/workspace/note.txt", input="from stdin\n")
    assert tenant.ok("files", "get", sandbox_id, "/workspace/note.txt") == "from stdin\n"
    r = tenant.run("sandbox", "exec", sandbox_id, "--", "cat", "/workspace/note.txt")
    assert r.stdout == "from stdin\n"


def test_files_ls_table_mkdir_mv_rm(tenant: Tenant, sandbox_id: str):
    tenant.ok("files", "mkdir", sandbox_id, "/workspace/lsdir")
    tenant.ok("files", "put", sandbox_id, "-", "/workspace/lsdir/a.txt", input="12345")
    tenant.ok("files", "mkdir", sandbox_id, "/workspace/lsdir/sub")
    out = tenant.ok("files", "ls", sandbox_id, "/workspace/lsdir")
    lines = out.splitlines()
    assert lines[0].split() == ["MODE", "SIZE", "MODIFIED", "NAME"]
    rows = {line.split()[-1]: line.split() for line in lines[1:]}
    assert rows["a.txt"][0] == "-rw-r--r--" and rows["a.txt"][1] == "5B"
    assert rows["sub/"][0].startswith("d")
    tenant.ok("files", "mv", sandbox_id, "/workspace/lsdir/a.txt", "/workspace/lsdir/b.txt")
    names = [e["name"] for e in json.loads(tenant.ok("files", "ls", sandbox_id, "/workspace/lsdir", "--json"))]
    assert sorted(names) == ["b.txt", "sub"]
    tenant.ok("files", "rm", sandbox_id, "/workspace/lsdir/b.txt")
    proc = tenant.run("files", "rm", sandbox_id, "/workspace/lsdir")
    assert proc.returncode == 1  # not empty
    tenant.ok("files", "rm", "-r", sandbox_id, "/workspace/lsdir")
    proc = tenant.run("files", "ls", sandbox_id, "/workspace/lsdir")
    assert proc.returncode == 1 and "not_found" in proc.stderr


def test_files_get_missing_file(tenant: Tenant, sandbox_id: str, tmp_path: Path):
    proc = tenant.run("files", "get", sandbox_id, "/workspace/nope", "-o", str(tmp_path / "x"))
    assert proc.returncode == 1 and "not_found" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_files_upload_directory_and_download(tenant: Tenant, sandbox_id: str, tmp_path: Path):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "main.py").write_text("import pkg.mod\nprint(pkg.mod.VALUE)\n")
    (tree / "pkg" / "__init__.py").write_text("")
    (tree / "pkg" / "mod.py").write_text("VALUE = 'uploaded'\n")
    err = tenant.run("files", "upload", sandbox_id, str(tree), "/workspace/proj").stderr
    assert "extracted 3 files" in err
    r = tenant.run("sandbox", "exec", "--cwd", "/workspace/proj", sandbox_id, "--", "python3", "main.py")
    assert (r.returncode, r.stdout) == (0, "uploaded\n")

    out_dir = tmp_path / "out"
    tenant.ok("files", "download", sandbox_id, "/workspace/proj", "-x", str(out_dir))
    assert (out_dir / "pkg" / "mod.py").read_text() == "VALUE = 'uploaded'\n"
    tar_path = tmp_path / "proj.tar"
    tenant.ok("files", "download", sandbox_id, "/workspace/proj", "-o", str(tar_path))
    with tarfile.open(tar_path) as tar:
        assert {"main.py", "pkg/mod.py"} <= {m.name.lstrip("./") for m in tar.getmembers()}


# --- shell -------------------------------------------------------------------------------


def test_shell_with_piped_stdin(tenant: Tenant, sandbox_id: str):
    proc = tenant.run("shell", sandbox_id, input="echo $((6*7))\nexit 3\n")
    assert proc.returncode == 3
    assert "42" in proc.stdout


def test_shell_runs_every_line_of_a_piped_script(tenant: Tenant, sandbox_id: str):
    """No line is lost however fast the input arrives (a terminal's line editing would
    discard typeahead), and the script's own exit status is the command's."""
    script = "".join(f"echo line{i}\n" for i in range(200)) + "echo oops >&2\nexit 4\necho unreachable\n"
    proc = tenant.run("shell", sandbox_id, input=script)
    assert proc.returncode == 4
    assert proc.stdout.split() == [f"line{i}" for i in range(200)]
    assert "oops" in proc.stderr


def test_shell_on_unknown_sandbox(tenant: Tenant):
    proc = tenant.run("shell", "sb_doesnotexist", input="")
    assert proc.returncode == 1 and "not_found" in proc.stderr


# --- tenants and nodes -------------------------------------------------------------------


def test_tenant_create_ls_and_keys(server: Server):
    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, url=server.url, key=server.admin_key)

    name = f"cli-{uuid.uuid4().hex[:8]}"
    proc = admin("tenant", "create", name, "--max-sandboxes", "2")
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    tenant_id, key = fields["id"].strip(), fields["api_key"].strip()
    assert tenant_id and key

    # The printed key works.
    assert cli("sandbox", "ls", url=server.url, key=key).returncode == 0

    table = admin("tenant", "ls").stdout
    row = next(line for line in table.splitlines() if name in line)
    assert row.split()[:3] == [tenant_id, name, "2"]

    added = admin("tenant", "add-key", tenant_id).stdout
    extra = dict(line.split(":", 1) for line in added.splitlines())
    key_id, key2 = extra["key_id"].strip(), extra["api_key"].strip()
    assert cli("sandbox", "ls", url=server.url, key=key2).returncode == 0
    assert admin("tenant", "revoke-key", tenant_id, key_id).returncode == 0
    assert cli("sandbox", "ls", url=server.url, key=key2).returncode == 1

    duplicate = admin("tenant", "create", name)
    assert duplicate.returncode == 1 and "conflict" in duplicate.stderr


def test_tenant_commands_need_admin(tenant: Tenant):
    proc = tenant.run("tenant", "ls")
    assert proc.returncode == 1 and "forbidden" in proc.stderr


def test_node_ls(server: Server):
    proc = cli("node", "ls", url=server.url, key=server.admin_key)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["ID", "STATE"]
    nodes = json.loads(cli("node", "ls", "--json", url=server.url, key=server.admin_key).stdout)
    assert nodes[0]["capacity"]["cpu"] > 0
