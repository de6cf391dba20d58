"""Every type of the node interface survives the node API's JSON both ways, and every
node error comes back as the same class with the same code."""

from __future__ import annotations

import json

import pytest

from cloche.node import errors
from cloche.node.api import DiskUsage, PoolStatus, TemplateInfo
from cloche.node.archive import UploadReport
from cloche.node.cgroups import Usage
from cloche.node.file_meta import FileInfo
from cloche.node.files import Entry
from cloche.node.net.firewall import Counters
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import IdlePolicy, Limits, SandboxSpec
from cloche.node.supervisor import ExecEvent, ExecResult
from cloche.node.watch import FsEvent
from cloche.nodeapi import wire
from cloche.snapshots.gc import GcReport

pytestmark = pytest.mark.offline

SPEC = SandboxSpec(
    template="py",
    limits=Limits(cpu=0.5, memory_mb=256),
    env={"A": "b"},
    timeout_s=60.0,
    idle=IdlePolicy(pause_after_s=5.0),
    on_resume="echo hi",
    network=NetworkPolicy.from_json({"egress": True, "max_connections": 9}),
    isolation="runc",
)
VALUES = [
    SPEC,
    SPEC.limits,
    SPEC.network,
    SandboxRecord(
        id="sb_1",
        state="running",
        spec=SPEC,
        uid_index=3,
        expires_at=99.5,
        snapshot="m",
        last_hibernate={"bytes": 1},
        net={"index": 1, "address": "100.64.0.3"},
    ),  # fmt: skip
    ExecRequest(cmd=["sh", "-c", "cat"], env={"K": "v"}, stdin=b"\x00\xffin", timeout_s=2.5, pty=True, detach=True),
    ExecRequest(cmd=["true"]),
    ExecResult(
        exit_code=3, signal=0, stdout=b"\x00out", stderr=b"err\xff", truncated=True, timed_out=False, duration_ms=1.5
    ),  # fmt: skip
    ExecEvent("stdout", b"\x01\x02"),
    ExecEvent("exit", exit_code=1, signal=9, truncated=True, timed_out=True),
    Entry(name="f", path="/w/f", type="symlink", size=3, mode=0o777, mtime=1.25, target="/etc"),
    UploadReport(files=2, dirs=1, links=1, bytes=10, skipped=[{"path": "/x", "reason": "device"}]),
    Usage(memory_bytes=1, anon_memory_bytes=2, cpu_usec=3, pids=4),
    DiskUsage(image_bytes=1, used_bytes=2, total_bytes=3),
    PoolStatus(template="base", isolation="runc", size=2, ready=1, claims=7),
    TemplateInfo(name="py", on_base=True),
    Counters(bytes_out=1, packets_out=2, bytes_in=3, packets_in=4, denied=5),
    GcReport(chunks_deleted=1, manifests_deleted=2, chunks_kept=3),
    FileInfo(
        name="l",
        path="/w/l",
        kind="symlink",
        size=3,
        st_mode=0o120777,
        uid=1000,
        gid=1000,
        mtime=2.5,
        target="/etc",
        target_kind="dir",
        metadata={"k": "v"},
    ),  # fmt: skip
    FsEvent(name="a/b", kind="create"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(value: object) -> None:
    assert wire.load(type(value), json.loads(json.dumps(wire.dump(value)))) == value


@pytest.mark.parametrize("exc", [errors.RuntimeFailure("x"), errors.SandboxNotFound("x"), errors.InvalidState("x"),
                                 errors.InvalidSpec("x"), errors.TemplateNotFound("x"),
                                 errors.FileError("x", "permission_denied")])  # fmt: skip
def test_errors_come_back_as_themselves(exc: errors.RuntimeFailure) -> None:
    back = wire.error_from(wire.error_body(exc))
    assert (type(back), back.code, str(back)) == (type(exc), exc.code, "x")
