"""Templates over the API, SDK and CLI: import a busybox rootfs or files over `base`,
create sandboxes from them; only the admin imports; a template in use is not deleted."""

from __future__ import annotations

import io
import os
import tarfile

import cloche
from tests.cli_zygote import run_cli
from tests.integration.conftest import Server


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_busybox_template_through_the_sdk(server: Server, busybox_template):
    _, key = server.tenant()
    with cloche.Client(server.url, server.admin_key) as admin, cloche.Client(server.url, key) as user:
        info = admin.templates.import_tar("busybox-api", busybox_template.read_bytes())
        assert info.name == "busybox-api" and not info.on_base
        assert "busybox-api" in [t.name for t in user.templates.list()]
        with user.sandboxes.create(template="busybox-api") as sbx:
            r = sbx.exec("ls /usr/bin/python3 || echo no-python; echo hi > /workspace/x; cat /workspace/x")
            assert r.stdout == "no-python\nhi\n"
            try:
                admin.templates.delete("busybox-api")
                raise AssertionError("a template in use was deleted")
            except cloche.Conflict as exc:
                assert "used by" in str(exc)
        admin.templates.delete("busybox-api")
        assert "busybox-api" not in [t.name for t in user.templates.list()]


def test_files_over_base_and_admin_only(server: Server):
    _, key = server.tenant()
    archive = _tar({"opt/agent/hello.py": b"print('hello from the template')\n"})
    with cloche.Client(server.url, key) as user:
        try:
            user.templates.import_tar("sneaky", archive)
            raise AssertionError("a tenant imported a template")
        except cloche.Forbidden:
            pass
    with cloche.Client(server.url, server.admin_key) as admin:
        assert admin.templates.import_tar("with-agent", archive, on_base=True).on_base
        try:
            admin.templates.import_tar("broken", b"not a tarball")
            raise AssertionError("garbage was imported")
        except cloche.InvalidRequest as exc:
            assert "could not be imported" in str(exc)
    with cloche.Client(server.url, key) as user, user.sandboxes.create(template="with-agent") as sbx:
        assert sbx.exec(["python3", "/opt/agent/hello.py"]).stdout == "hello from the template\n"


def test_template_cli(server: Server, tmp_path):
    archive = tmp_path / "t.tar.gz"
    archive.write_bytes(_tar({"etc/motd": b"cli template\n"}))
    env = {**os.environ, "CLOCHE_URL": server.url, "CLOCHE_API_KEY": server.admin_key}
    run = lambda *a: run_cli(a, env=env, text=True)  # noqa: E731
    assert run("template", "import", "cli-made", str(archive), "--on-base").stdout.strip() == "cli-made"
    listing = run("template", "ls").stdout
    assert "cli-made" in listing and "base" in listing
    assert run("template", "rm", "cli-made").returncode == 0
