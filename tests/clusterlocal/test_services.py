"""Each service `cloche cluster local` runs starts its real process, answers as its
clients expect, and stops with nothing of it left running; a missing one is named with
how to install it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import psycopg
import pytest

from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.local.postgres import PostgresServer
from cloche.cluster.local.process import Child
from cloche.cluster.local.weed import WeedS3


@pytest.fixture()
def root() -> Iterator[Path]:
    """A directory PostgreSQL's unprivileged user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="cloche-clusterlocal-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def gone(child: Child) -> bool:
    """Whether the process and every process of its group are gone."""
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return not child.alive()
    return False


def test_etcd_answers_and_stops(root: Path) -> None:
    etcd = EtcdServer(root / "etcd")
    etcd.start()
    child = etcd.child
    assert child is not None and etcd.healthy()
    etcd.shutdown()
    assert gone(child) and not etcd.healthy()
    assert child.proc.returncode == -signal.SIGTERM  # it shut down on SIGTERM (it re-raises it), no SIGKILL needed
    assert "received signal; shutting down" in child.log.read_text()


def test_postgres_accepts_a_connection_and_keeps_data_across_restarts(root: Path) -> None:
    pg = PostgresServer(root / "pg")
    pg.start()
    child = pg.child
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE TABLE kept (v text)")
            c.execute("INSERT INTO kept VALUES ('still here')")
    finally:
        pg.stop()
    assert child is not None and gone(child) and child.proc.returncode == 0
    pg.start()
    try:
        with psycopg.connect(pg.dsn) as c:
            assert c.execute("SELECT v FROM kept").fetchall() == [("still here",)]
    finally:
        pg.stop()


def test_postgres_moves_to_another_port_when_its_own_is_taken_before_it_binds(root: Path) -> None:
    """The port picked at construction was free then; a socket that takes it before the
    first start binds it (here a listener of the test's own) sends that start elsewhere."""
    pg = PostgresServer(root / "pg")
    picked = pg.port
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", picked))
        taken.listen()
        pg.start()
        try:
            assert pg.port != picked and f":{pg.port}/" in pg.dsn
            with psycopg.connect(pg.dsn) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
        finally:
            pg.stop()
    # from its first start on, clients know the port: a restart keeps it
    moved = pg.port
    pg.start()
    try:
        assert pg.port == moved
    finally:
        pg.stop()


def test_weed_creates_a_bucket_and_stops(root: Path) -> None:
    weed = WeedS3(root / "weed")
    child = weed.child
    try:
        name = f"b-{uuid.uuid4().hex[:8]}"
        assert weed.bucket(name) == weed.blob_url(name)
        assert weed.bucket(name, exist_ok=True) == weed.blob_url(name)
        assert name in [b["Name"] for b in weed.client().list_buckets()["Buckets"]]
    finally:
        weed.kill()
    assert child is not None and gone(child)
    assert not list(Path("/tmp").glob(f"seaweedfs-*-grpc-{weed.s3_grpc}.sock"))


def test_a_weed_started_by_a_process_pointed_at_another_s3_serves_its_own_clients(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The tests' processes carry another weed's credentials in AWS_*: weed would take
    them for an admin identity of its own, which shadowed its configured key."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cloche-other")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-this-servers-secret")
    weed = WeedS3(root / "weed")
    try:
        assert weed.bucket("own") == weed.blob_url("own")
        assert "AWS environment variables" not in (root / "weed" / "weed.log").read_text()
    finally:
        weed.kill()


def test_a_weed_not_up_in_time_is_started_again_on_other_ports(root: Path) -> None:
    """The first starts are given no time at all: each is killed, its log kept for a
    post-mortem, and the last one (with the full time) serves."""
    kept = root / "failed-starts"
    with mock.patch("cloche.cluster.local.weed.FIRST_START_S", 0.0), \
            mock.patch("cloche.cluster.local.weed.FAILED_LOGS", kept):  # fmt: skip
        weed = WeedS3(root / "weed")
    try:
        assert weed.child is not None and weed.child.alive()
        assert weed.bucket("second-start") == weed.blob_url("second-start")
        assert len(list(kept.iterdir())) == 2, "each given-up start left its log"
        assert "Start Seaweed Master" in (root / "weed" / "weed.log").read_text()
    finally:
        weed.kill()


def test_missing_etcd_is_named_with_its_package(root: Path) -> None:
    env = {**os.environ, "PATH": str(root), "COLUMNS": "200"}  # a PATH with no etcd on it; lines unwrapped
    done = subprocess.run([sys.executable, "-m", "cloche.cli", "cluster", "local", "--nodes", "1",
                           "--data-dir", str(root / "d")], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "etcd not found" in done.stderr
    assert "apt-get install etcd-server" in done.stderr
    assert "make setup" in done.stderr
    assert not (root / "d").exists()  # nothing was started
