"""A node's published credential is readable by the servers' group, which deploy/ relies on.

Why: the servers run as an unprivileged user (65532) and the nodes as root; the node
writes CLUSTER_DIR/node-credentials/<id>, and a server reads it to call that node. The
deployment files give that directory the servers' group; the file must follow it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from cloche.nodeapi.auth import publish_credential

SERVERS_GID = 65532


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another group needs root")
def test_the_credential_takes_the_directory_group_and_is_group_readable() -> None:
    with tempfile.TemporaryDirectory() as name:  # not under tmp_path, whose parents are 0700
        cluster_dir = Path(name)
        cluster_dir.chmod(0o711)
        _publish_and_read_as_server(cluster_dir)


def _publish_and_read_as_server(cluster_dir: Path) -> None:
    shared = cluster_dir / "node-credentials"
    shared.mkdir(mode=0o2750)
    os.chown(shared, 0, SERVERS_GID)
    path = publish_credential(cluster_dir, "node-1", "cln_secret")
    st = path.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVERS_GID, 0o640)
    pid = os.fork()
    if pid == 0:  # a server: another user, in the group
        try:
            os.setgroups([SERVERS_GID])
            os.setgid(SERVERS_GID)
            os.setuid(SERVERS_GID)
            os._exit(0 if path.read_text() == "cln_secret" else 1)
        finally:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0


def test_without_a_shared_directory_nobody_else_reads_it(tmp_path: Path) -> None:
    path = publish_credential(tmp_path, "node-1", "cln_secret")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
