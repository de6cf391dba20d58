"""Hibernate and resume at the node-runtime level, against workspace size.

For each size: fill /workspace with random data (incompressible, the worst case), then
measure hibernate (first and repeated), resume on the local fast path (the node still
holds the disk: nothing is copied), resume from the blob store (disk dropped, every chunk
fetched, verified and written), the bytes a second hibernate writes after a 1% change,
and what a hibernated sandbox still holds (processes, cgroup, memory).

Run by bench/run.py or standalone. Sizes: BENCH_HIBERNATE_SIZES_MB (1,100,1024),
BENCH_HIBERNATE_N (5 repetitions per timing).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import OWN_NODE_KEYS, Goal, Result, env_int, failed, latency_results, log  # noqa: E402

T = "Hibernate and resume (node runtime)"
DESCRIPTIONS = {
    T: (
        "A `NodeRuntime` with the local blob store (a directory on the same disk). Workspaces are random "
        "bytes in 10 MB files. *Local fast path*: the node keeps the sandbox's disk image after hibernating, "
        "so resume only remounts it and starts the container. *From the blob store*: the disk image is "
        "deleted, so resume builds a fresh image from the manifest (every chunk read, zstd-decompressed, "
        "SHA-256-verified and written). The 1% change rewrites 1% of the bytes in the middle of one file."
    ),
}


def _sizes() -> list[int]:
    raw = os.environ.get("BENCH_HIBERNATE_SIZES_MB", "1,100,1024")
    return [int(x) for x in raw.split(",") if x.strip()]


async def _bench_size(rt: object, size_mb: int, n: int) -> list[Result]:
    from cloche.node.protocol import ExecRequest
    from cloche.node.spec import Limits, SandboxSpec

    rec = await rt.create(SandboxSpec(limits=Limits(disk_mb=max(256, size_mb * 2 + 256), memory_mb=256)))  # type: ignore[attr-defined]
    sid = rec.id
    sh = lambda script: rt.exec(sid, ExecRequest(cmd=["/bin/sh", "-c", script], timeout_s=600))  # type: ignore[attr-defined]  # noqa: E731
    files, rest = divmod(size_mb, 10)
    script = f"for i in $(seq 1 {files}); do head -c 10485760 /dev/urandom > /workspace/f$i; done; " if files else ""
    script += f"head -c {rest * 1048576 or (1048576 if not files else 0)} /dev/urandom > /workspace/rest"
    await sh(script)
    label = f"{size_mb} MB"
    out: list[Result] = []

    first = time.perf_counter()
    await rt.hibernate(sid)  # type: ignore[attr-defined]
    first_ms = (time.perf_counter() - first) * 1000
    written = rt.get(sid).last_hibernate["bytes_written"]  # type: ignore[attr-defined]
    out.append(Result(f"hib.{size_mb}.first", T, f"{label}: first hibernate", first_ms, "ms",
                      note=f"{label}: the first hibernate wrote {written / 1e6:.1f} MB (compressed)"))  # fmt: skip

    usage_ok = not any(Path("/sys/fs/cgroup/memory/cloche").rglob(sid)) and sid not in rt.driver.list_ids()  # type: ignore[attr-defined]
    out.append(Result(f"hib.{size_mb}.memory", T, f"{label}: memory held while hibernated", 0 if usage_ok else None,
                      "bytes", goal=Goal("<=", 0),
                      error=None if usage_ok else "a cgroup or container is left while hibernated"))  # fmt: skip

    local, again = [], []
    for _ in range(n):
        start = time.perf_counter()
        await rt.wake(sid)  # type: ignore[attr-defined]
        local.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        await rt.hibernate(sid)  # type: ignore[attr-defined]
        again.append((time.perf_counter() - start) * 1000)
    goal_local = {50: Goal("<=", 100)} if size_mb == 100 else None
    out += latency_results(f"hib.{size_mb}.resume_local", T, f"{label}: resume, local fast path", local,
                           percentiles=(50,), goals=goal_local, plot="Resume time vs workspace size",
                           label=f"local {label}")  # fmt: skip
    out += latency_results(f"hib.{size_mb}.again", T, f"{label}: hibernate again, nothing changed", again,
                           percentiles=(50,))  # fmt: skip

    blob = []
    for _ in range(max(1, n // 2)):
        await rt.hibernate(sid, keep_local=False)  # type: ignore[attr-defined]
        start = time.perf_counter()
        await rt.wake(sid)  # type: ignore[attr-defined]
        blob.append((time.perf_counter() - start) * 1000)
    goal_blob = {50: Goal("<=", 1000)} if size_mb == 100 else None
    out += latency_results(f"hib.{size_mb}.resume_blob", T, f"{label}: resume from the blob store", blob,
                           percentiles=(50,), goals=goal_blob, plot="Resume time vs workspace size",
                           label=f"blob {label}")  # fmt: skip

    change = max(1, size_mb * 1048576 // 100)
    target = "/workspace/f1" if files else "/workspace/rest"
    seek = 4096 if not files else 3 * 1048576
    await sh(f"head -c {change} /dev/urandom | dd of={target} bs=65536 seek={seek} oflag=seek_bytes "
             "conv=notrunc status=none")  # fmt: skip
    await rt.hibernate(sid)  # type: ignore[attr-defined]
    delta = rt.get(sid).last_hibernate["bytes_written"]  # type: ignore[attr-defined]
    total = size_mb * 1048576
    out.append(Result(f"hib.{size_mb}.delta", T, f"{label}: bytes written by a second hibernate after a 1% change",
                      100 * delta / total, "% of workspace", goal=Goal("<=", 3) if size_mb >= 100 else None,
                      note=f"{label}: {delta / 1e6:.2f} MB written for a {change / 1e6:.2f} MB change"))  # fmt: skip
    await rt.kill(sid)  # type: ignore[attr-defined]
    return out


async def _run() -> list[Result]:
    from cloche.config import INIT_BINARY
    from cloche.node.runtime import NodeConfig, NodeRuntime, node_key

    data = Path(tempfile.mkdtemp(prefix="cloche-bench-hib-", dir=os.environ.get("BENCH_DATA_DIR", "/var/tmp")))
    OWN_NODE_KEYS.add(node_key(data))
    rt = NodeRuntime(NodeConfig(data_dir=data, init_binary=INIT_BINARY))
    await rt.start()
    out: list[Result] = []
    try:
        for size in _sizes():
            log(f"hibernate: {size} MB workspace")
            try:
                out += await _bench_size(rt, size, env_int("BENCH_HIBERNATE_N", 5))
            except Exception as exc:
                out.append(failed(f"hib.{size}", T, f"{size} MB workspace", exc))
    finally:
        for rec in rt.all_records():
            await rt.kill(rec.id)
        await rt.close()
        shutil.rmtree(data, ignore_errors=True)
    return out


def run() -> list[Result]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for r in run():
        print(f"{r.metric}: {r.value} {r.unit} {r.error or ''} {r.note}")
