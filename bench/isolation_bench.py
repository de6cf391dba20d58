"""gVisor vs runc at the node-runtime level: what the stronger tier costs.

For each tier (runc, then gVisor's runsc on the ptrace platform): cold create (new
disk, mounts, container, supervisor listening), warm claim (a pooled sandbox handed
out), exec round trip of `true`, writing 10 MB (through the file API on the host, and
from inside the sandbox), and the idle memory (PSS) of a sandbox: its processes, and
under gVisor the Sentry and the gofer. Each gVisor row's ratio is to the runc row.

Run by bench/run.py or standalone. Sizes: BENCH_ISO_CREATES (10), BENCH_ISO_EXECS (200),
BENCH_ISO_IDLE (5 idle sandboxes per tier).
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

from results import OWN_NODE_KEYS, Result, env_int, failed, latency_results, log  # noqa: E402
from runtime_bench import INIT_BINARY, sandbox_pids, smaps_kib  # noqa: E402

T = "Isolation tiers: gVisor vs runc (node runtime)"
DESCRIPTIONS = {
    T: (
        "One `NodeRuntime` per tier with networking on, base template, 1 cpu / 512 MB. gVisor is Debian's "
        "runsc 0.0~20221219 with `--platform=ptrace` (kvm hangs at boot on this nested guest), "
        "`--file-access=shared`, `--network=sandbox` (netstack), `--host-uds=all`. Exec goes to cloche-init "
        "over a unix socket in both tiers (gVisor: a socket cloche-init binds in a host directory). Idle PSS "
        "counts every process of the sandbox's cgroup plus, for gVisor, its gofer."
    ),
}
TEN_MB = 10 << 20


def _gofer_pids(sandbox_id: str) -> set[int]:
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"runsc-gofer") and sandbox_id.encode() in cmdline:
            pids.add(int(pid))
    return pids


async def _tier(isolation: str) -> list[Result]:
    from cloche.node.protocol import ExecRequest
    from cloche.node.runtime import NodeConfig, NodeRuntime, node_key
    from cloche.node.spec import SandboxSpec

    parent = os.environ.get("BENCH_DATA_DIR", "/var/tmp")
    data = Path(tempfile.mkdtemp(prefix=f"cloche-bench-iso-{isolation}-", dir=parent))
    OWN_NODE_KEYS.add(node_key(data))
    rt = NodeRuntime(NodeConfig(data_dir=data, init_binary=INIT_BINARY, isolation=isolation, pool_size=1))
    await rt.start()
    spec = SandboxSpec(isolation=isolation)
    base = None if isolation == "runc" else "iso.runc"
    baseline = (lambda name: f"{base}.{name}") if base else (lambda name: None)
    out: list[Result] = []
    try:
        log(f"isolation: {isolation}: cold creates")
        cold = []
        for _ in range(env_int("BENCH_ISO_CREATES", 10)):
            t0 = time.perf_counter()
            rec = await rt.create(spec, use_pool=False)
            cold.append((time.perf_counter() - t0) * 1000)
            await rt.kill(rec.id)
        out += _rows(isolation, "cold", "cold create", cold, baseline)

        log(f"isolation: {isolation}: warm claims")
        warm = []
        for _ in range(5):
            await rt.pool.wait_ready(120)
            t0 = time.perf_counter()
            rec = await rt.create(spec)
            warm.append((time.perf_counter() - t0) * 1000)
            await rt.kill(rec.id)
        out += _rows(isolation, "warm", "warm claim", warm, baseline)

        rec = await rt.create(spec, use_pool=False)
        log(f"isolation: {isolation}: exec and file writes")
        execs = []
        for _ in range(env_int("BENCH_ISO_EXECS", 200)):
            t0 = time.perf_counter()
            await rt.exec(rec.id, ExecRequest(cmd=["/bin/true"]))
            execs.append((time.perf_counter() - t0) * 1000)
        out += _rows(isolation, "exec", "exec `true`", execs, baseline)
        payload = os.urandom(TEN_MB)
        api, inside = [], []
        for i in range(10):
            fs = rt.fs(rec.id)
            t0 = time.perf_counter()
            await asyncio.to_thread(fs.write, f"/workspace/f{i}", payload)
            api.append((time.perf_counter() - t0) * 1000)
            script = f"head -c {TEN_MB} /dev/zero > /workspace/g{i}"
            r = await rt.exec(rec.id, ExecRequest(cmd=["/bin/sh", "-c", script]))
            inside.append(r.duration_ms)
        out += _rows(isolation, "write_api", "write 10 MB (file API, host side)", api, baseline)
        out += _rows(isolation, "write_in", "write 10 MB (inside, exec round trip)", inside, baseline)
        await rt.kill(rec.id)

        n = env_int("BENCH_ISO_IDLE", 5)
        log(f"isolation: {isolation}: {n} idle sandboxes")
        ids = [(await rt.create(spec, use_pool=False)).id for _ in range(n)]
        await asyncio.sleep(3)
        pss = [sum(smaps_kib(p).get("Pss", 0) for p in sandbox_pids(rt, i) | _gofer_pids(i)) / 1024 for i in ids]
        out.append(Result(key=f"iso.{isolation}.pss", table=T, metric=f"{isolation}: idle PSS per sandbox (n={n})",
                          value=sum(pss) / len(pss), unit="MiB", baseline=baseline("pss")))  # fmt: skip
    except Exception as exc:
        out.append(failed(f"iso.{isolation}", T, isolation, exc))
    finally:
        for r in rt.list():  # (the pool's own go in close)
            await rt.kill(r.id)
        await rt.close()
        shutil.rmtree(data, ignore_errors=True)
    return out


def _rows(isolation: str, name: str, label: str, samples: list[float], baseline) -> list[Result]:  # type: ignore[no-untyped-def]
    return latency_results(f"iso.{isolation}.{name}", T, f"{isolation}: {label}", samples, percentiles=(50, 95),
                           baselines={50: baseline(f"{name}.p50"), 95: baseline(f"{name}.p95")})  # fmt: skip


def run() -> list[Result]:
    return asyncio.run(_tier("runc")) + asyncio.run(_tier("gvisor"))


if __name__ == "__main__":
    for r in run():
        print(f"{r.metric:55} {r.value if r.value is None else round(r.value, 2)} {r.unit} {r.error or ''}")
