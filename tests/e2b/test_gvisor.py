"""The E2B held-in flows on gVisor: a server whose default isolation is gvisor (the E2B
routes create sandboxes in the server's default tier), running a representative subset
of test_sync.py and test_code_interpreter.py, imported so that they are the same tests:
create, foreground, background and streamed commands, stdin, files, pause and resume,
and the code interpreter's run_code (state, streaming, errors, contexts)."""

from __future__ import annotations

from e2b import Sandbox

from tests.e2b.conftest import E2bEnv
from tests.e2b.test_code_interpreter import test_async_code_interpreter  # noqa: F401
from tests.e2b.test_sync import (  # noqa: F401 - collected here against this module's server
    sbx,
    test_background_stdin_list_connect_kill,
    test_create_with_template_timeout_metadata_envs,
    test_exit_code_user_cwd_env,
    test_files_make_dir_rename_remove_info,
    test_files_write_read_list_exists,
    test_foreground_command_with_streaming_callbacks,
    test_set_timeout_pause_connect_kill,
    test_streaming_arrives_before_the_command_ends,
)

ISOLATION = "gvisor"


def test_the_sandbox_is_a_gvisor_one(e2b: E2bEnv):
    with Sandbox.create(timeout=60) as s, e2b.server.client(e2b.key) as c:
        assert s.commands.run("uname -r").stdout == "4.4.0\n"
        assert c.get(f"/v1/sandboxes/{s.sandbox_id}").json()["isolation"] == "gvisor"
