"""Resume of a 100 MB sandbox on another node, from S3 (the cluster's SeaweedFS) against a
local blob store (file://, a directory on the same disk), in the same run.

Two NodeRuntimes in this process share the blob store: the first writes the workspace and
hibernates with keep_local=False (everything goes to the store); the second adopts the
sandbox from that snapshot, as a node does on failover or drain, and each trial times it
until the sandbox runs. The second node's S3 chunk cache is emptied before each trial, so
every chunk comes from S3.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

from cluster_rig import Rig
from results import Goal, Result, env_int, latency_results, log
from runtime_bench import Node, StepTimer, slug
from server import DATA_PARENT

from cloche.node.protocol import ExecRequest
from cloche.node.spec import Limits, SandboxSpec
from cloche.snapshots.blobstore import CachedBlobStore

T_RESUME = "Cluster mode: resume of 100 MB on another node, S3 vs local blob store"


Steps = dict[str, tuple[float, int]]  # label -> (ms summed over threads, calls), per resume


async def _resume_times(name: str, blob_url: str, size_mb: int, n: int) -> tuple[list[float], Steps]:
    """The resume times (ms) and, per resume, the time summed over threads in each blob store step
    and how many calls it made."""
    nodes = [Node(f"cluster-resume-{name}-{role}") for role in ("src", "dst")]
    for node in nodes:
        node.config.network = None
        node.config.blob_url = blob_url
    async with nodes[0] as src, nodes[1] as dst:
        sid = (await src.create(SandboxSpec(limits=Limits(disk_mb=size_mb * 2 + 256, memory_mb=256)))).id
        files = " ".join(str(i) for i in range(size_mb // 10))
        fill = f"for i in {files}; do head -c 10485760 /dev/urandom > /workspace/f$i; done"
        await src.exec(sid, ExecRequest(cmd=["sh", "-c", fill], timeout_s=600))
        lost = await src.hibernate(sid, keep_local=False)
        timer = StepTimer()  # where a resume's time goes, summed over the store's fetch threads
        timer.wrap(dst.snapshots, "get_chunk", "chunk fetched, decompressed and verified")
        blobs = dst.snapshots.blobs
        if isinstance(blobs, CachedBlobStore):
            timer.wrap(blobs.remote, "get", "S3 GET")
            timer.wrap(blobs.cache, "put", "chunk cache write (fsync)")
        samples = []
        for i in range(n):
            shutil.rmtree(nodes[1].data / "blobs" / "s3-cache", ignore_errors=True)
            start = time.perf_counter()
            await dst.adopt(lost, lost.snapshot)
            samples.append((time.perf_counter() - start) * 1000)
            if i == 0:
                res = await dst.exec(sid, ExecRequest(cmd=["sh", "-c", "cat /workspace/f* | wc -c"]))
                if int(res.stdout) != size_mb // 10 * 10485760:
                    raise RuntimeError(f"resumed workspace holds {res.stdout.strip()} bytes")
            await dst.kill(sid)
        timer.restore()
    return samples, {label: (sum(ms) / n, len(ms) // n) for label, ms in timer.samples.items()}


async def resume_results(rig: Rig) -> list[Result]:
    size_mb = 100
    n = env_int("BENCH_CLUSTER_RESUME_N", 3)
    assert rig.local.weed is not None
    local_dir = Path(tempfile.mkdtemp(prefix="cloche-bench-blobs-", dir=DATA_PARENT))
    try:
        with mock.patch.dict(os.environ, rig.local.weed.credentials()):  # what this process's S3 client signs with
            log(f"cluster: resume {size_mb} MB on another node from a file:// store, {n} times")
            local, local_steps = await _resume_times("file", f"file://{local_dir}", size_mb, n)
            log(f"cluster: resume {size_mb} MB on another node from S3, {n} times")
            s3, s3_steps = await _resume_times("s3", rig.local.weed.bucket("bench-resume", exist_ok=True), size_mb, n)
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    out = latency_results("cluster.resume.local", T_RESUME, f"{size_mb} MB: adopt and run, file:// store", local,
                          percentiles=(50,))  # fmt: skip
    out += latency_results("cluster.resume.s3", T_RESUME, f"{size_mb} MB: adopt and run, S3 (SeaweedFS)", s3,
                           percentiles=(50,), baselines={50: "cluster.resume.local.p50"},
                           goals={50: Goal("<=", 5, on="ratio")})  # fmt: skip
    for store, steps in (("file://", local_steps), ("S3", s3_steps)):
        for label, (ms, calls) in steps.items():
            out.append(Result(f"cluster.resume.{slug(store)}.{slug(label)}", T_RESUME,
                              f"{store}: {label}, per resume ({calls} calls, summed over threads)", ms,
                              "ms"))  # fmt: skip
    return out
