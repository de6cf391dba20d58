"""Runtime-level benchmarks: NodeRuntime driven directly (no API server in between).

Each benchmark runs on its own NodeRuntime with its own data directory under /var/tmp
(a real disk, not the tmpfs /tmp, so disk images do not sit in RAM) and is torn down at
the end: every sandbox killed, the node's /run/cloche/<key> directory and cgroup parent
removed, and the host checked for leftovers (containers, mounts, loop devices, cgroups,
uid ranges).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from results import (
    OWN_NODE_KEYS,
    Goal,
    Result,
    env_float,
    env_int,
    failed,
    latency_results,
    log,
    note_conditions,
    percentile,
)

from cloche.node import cgroups, disk, idmap, linux
from cloche.node.protocol import ExecRequest
from cloche.node.runtime import NodeConfig, NodeRuntime, node_key
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ping

REPO = Path(__file__).resolve().parent.parent
INIT_BINARY = REPO / "src" / "cloche" / "_bin" / "cloche-init"
DATA_PARENT = Path(os.environ.get("BENCH_DATA_DIR", "/var/tmp"))

T_COLD = "Cold create (NodeRuntime.create, no pool)"
T_BREAKDOWN = "Cold create breakdown (mean per create, same samples)"
T_WARM = "Warm-pool claim to first exec result"
T_EXEC = "Exec round trip of `true` (runtime level)"
T_TPUT = "Exec throughput (concurrent callers)"
T_MEM = "Host memory per idle sandbox"
T_MEM_SCALE = "How create/kill steps scale with the number of sandboxes (during the memory run)"
PLOT_CREATE = "Sandbox create latency (CDF)"
PLOT_EXEC = "Exec round trip of `true` (CDF)"
PLOT_MEM = "Host memory per idle sandbox (KiB)"

DESCRIPTIONS = {
    T_COLD: (
        "`await rt.create(spec, use_pool=False)` with default limits, one at a time, each "
        "sandbox killed (untimed) before the next; one unmeasured warm-up create (which also "
        "builds the `base` template). Covers uid range, record (fsync), sparse ext4 image + "
        "mkfs, loop mount, idmapped template bind, overlay, config.json, `runc run -d` "
        "until the supervisor runs. The baseline `runc run` also runs and destroys "
        "`/bin/true`, which cloche's create does not, so the ratio slightly favours runc."
    ),
    T_BREAKDOWN: (
        "Wall time inside each step of the cold creates above, from thin timing wrappers "
        "around the runtime's own functions, divided by the number of creates (a step that "
        "only some creates take, e.g. mkfs when the disk stock is empty, shows its average "
        "share); `other` is the rest (thread hops, mkdirs, overlay mount, config.json, "
        "template lookup, Python)."
    ),
    T_WARM: (
        "NodeRuntime with a warm pool; after `pool.wait_ready()`, each sample times "
        "`rt.create(spec)` (a real claim, verified by the pool's claim counter) plus "
        "`rt.exec(id, ExecRequest(cmd=['true']))`. The sandbox is then killed and the pool "
        "refilled (untimed) before the next sample. The pool starts refilling as soon as a "
        "sandbox is claimed, so the first exec competes with that refill for the 2 cores, "
        "as it does in production."
    ),
    T_EXEC: (
        "Sequential `await rt.exec(id, ExecRequest(cmd=['true']))` on one idle sandbox "
        "after 50 warm-up execs; each is a fresh unix-socket connection to cloche-init, "
        "served by a reused handler process that spawns `true`. `ping` is a supervisor round "
        "trip without any fork or exec (transport + asyncio cost only)."
    ),
    T_TPUT: (
        "asyncio.gather of N caller loops, each running `rt.exec(..., ['true'])` back to "
        "back for a fixed duration, all in one event loop (one host process): first all "
        "callers on one sandbox, then the same callers spread over 4 sandboxes (each "
        "sandbox has the default cpu=1.0 limit, i.e. at most one core for its processes), "
        "then all callers on one sandbox whose cpu limit is every core of the host. "
        "CPU figures are from getrusage (this process) and /proc/stat (whole host) over "
        "the same window. The floor: a shell loop inside the sandbox spawning "
        "`/usr/bin/true` (fork, exec, wait; no supervisor, no host), whose sandbox CPU per "
        "spawn bounds what a sandbox with cpu=1.0 can run, whatever the supervisor does."
    ),
    T_MEM: (
        "Idle `base` sandboxes (disk_mb=64, memory_mb=64) created concurrently with bounded "
        "concurrency, then measured: PSS (smaps_rollup) summed over every process in each "
        "sandbox's cgroup plus runc's recorded init pid (cloche-init, pid 1; runc exits "
        "after `run -d`, there is no shim), and the host's MemAvailable drop (sync'ed, "
        "before vs after, divided by the number running), which also counts kernel memory "
        "(mounts, loop devices, ext4/jbd2, cgroups, page tables, namespaces). Liveness: "
        "`runc list` status plus an exec of `true` in every sandbox, after the memory "
        "readings."
    ),
    T_MEM_SCALE: (
        "Per-call wall time of steps inside the creates and kills of the memory run above, "
        "from timing wrappers, comparing the first tenth of the calls (few sandboxes on the "
        "host) with the last tenth (almost all of them up; for kills the order is reversed: "
        "the first kills see every sandbox). The ratio column is last/first. Creates run "
        "BENCH_IDLE_CONCURRENCY at a time and so do kills, so a call's latency includes "
        "queueing behind the others on the host's CPUs."
    ),
}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


# ---- helpers ------------------------------------------------------------------------


class Node:
    """A NodeRuntime on a throwaway data dir, fully removed by close()."""

    def __init__(self, name: str, pool_size: int = 0, pool_limits: Limits | None = None) -> None:
        DATA_PARENT.mkdir(parents=True, exist_ok=True)
        self.data = Path(tempfile.mkdtemp(prefix=f"cloche-bench-{name}-", dir=DATA_PARENT))
        self.config = NodeConfig(data_dir=self.data, init_binary=INIT_BINARY,
                                 pool_size=pool_size, pool_limits=pool_limits or Limits())  # fmt: skip
        self.rt: NodeRuntime | None = None
        OWN_NODE_KEYS.add(node_key(self.data))

    async def __aenter__(self) -> NodeRuntime:
        self.rt = NodeRuntime(self.config)
        await self.rt.start()
        return self.rt

    async def __aexit__(self, *exc: object) -> None:
        rt = self.rt
        assert rt is not None
        try:
            errors = await kill_all(rt, [r.id for r in rt.list()], concurrency=8)
            if rt.pool.size:
                # Never close while the pool is refilling: cancelling an in-flight
                # create_cold races its own cleanup and leaks (see the report).
                await rt.pool.wait_ready(timeout=300)
            await rt.close()  # stops the pool and kills its ready sandboxes
            running = rt.driver.list_ids() if rt.run.exists() else []
            if errors or running:
                raise RuntimeError(f"teardown: kill errors {errors[:3]}, still running {running}")
        finally:
            shutil.rmtree(rt.run, ignore_errors=True)
            cgroups.remove_tree(rt.cgroup_parent)
            shutil.rmtree(self.data, ignore_errors=True)
        left = leftovers(rt, self.data)
        if left:
            raise RuntimeError(f"node left things behind: {left}")


def leftovers(rt: NodeRuntime, data: Path) -> list[str]:
    state = rt.run / "runc"  # (not `runc list`: it would recreate the state root)
    found = [f"container {c.name}" for c in state.iterdir()] if state.is_dir() else []
    found += [f"mount {m}" for m in linux.mountpoints() if m.startswith(str(rt.run))]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().startswith(str(data)):
                found.append(f"loop device {backing.parent.parent.name}")
        except OSError:
            continue
    found += [f"cgroup {p}" for p in cgroups.leftovers(rt.cgroup_parent)]
    uid_root = rt.config.run_root / "uids"
    for marker in uid_root.iterdir() if uid_root.is_dir() else []:
        try:
            if marker.read_text() == rt.key:
                found.append(f"uid range {marker.name}")
        except OSError:
            continue
    found += [str(p) for p in (rt.run, data) if p.exists()]
    return found


async def gather_bounded(items: list[Any], fn: Callable[[Any], Awaitable[Any]],
                         concurrency: int) -> list[Any]:  # fmt: skip
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items), return_exceptions=True)


async def kill_all(rt: NodeRuntime, ids: list[str], concurrency: int) -> list[BaseException]:
    outcomes = await gather_bounded(ids, rt.kill, concurrency)
    return [o for o in outcomes if isinstance(o, BaseException)]


def spec(**limits: Any) -> SandboxSpec:
    return SandboxSpec(template="base", limits=Limits(**limits))


TRUE = ["true"]


async def exec_true(rt: NodeRuntime, sandbox_id: str) -> float:
    start = time.perf_counter()
    res = await rt.exec(sandbox_id, ExecRequest(cmd=list(TRUE)))
    ms = (time.perf_counter() - start) * 1000
    if res.exit_code != 0:
        raise RuntimeError(f"`true` exited {res.exit_code}: {res.stderr!r}")
    return ms


# ---- 2. cold create (+ breakdown) ---------------------------------------------------


class StepTimer:
    """Wraps runtime steps (module functions and instance methods) to time them."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str,
             when: Callable[..., bool] | None = None) -> None:  # fmt: skip
        original = getattr(owner, attr)
        had_own = attr in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if when is not None and not when(*args, **kwargs):
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ms = (time.perf_counter() - start) * 1000
                self.totals[label] = self.totals.get(label, 0.0) + ms
                self.samples.setdefault(label, []).append(ms)

        setattr(owner, attr, timed)
        self._undo.append((lambda: setattr(owner, attr, original)) if had_own else (lambda: delattr(owner, attr)))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


async def bench_cold(n: int) -> list[Result]:
    results: list[Result] = []
    async with Node("cold") as rt:
        s = spec()
        warm = await rt.create(s, use_pool=False)
        await rt.kill(warm.id)
        timer = StepTimer()
        timer.wrap(rt.uids, "allocate", "uid range allocate")
        timer.wrap(rt.records, "save", "record save (fsync) x2")
        # Only mkfs on the create's own path: a background disk stock (if the runtime keeps
        # one) formats spare images in its own thread, which is not the create's time.
        timer.wrap(
            disk,
            "create_image",
            "sparse image + mkfs.ext4 (in the create)",
            when=lambda *a, **k: threading.current_thread().name != "disk-stock",
        )
        if hasattr(rt, "disk_stock"):
            timer.wrap(rt.disk_stock, "take", "pre-formatted image from the disk stock")
        timer.wrap(disk, "mount_image", "loop attach + ext4 mount")
        timer.wrap(idmap, "bind_shifted", "idmapped template bind (userns helper)")
        timer.wrap(rt.driver, "run", "runc run -d (until supervisor runs)")
        samples = []
        log(f"runtime: cold create x{n}")
        try:
            for _ in range(n):
                start = time.perf_counter()
                rec = await rt.create(s, use_pool=False)
                samples.append((time.perf_counter() - start) * 1000)
                await rt.kill(rec.id)
        finally:
            timer.restore()
    results += latency_results(
        "runtime.cold", T_COLD, "cold create", samples, percentiles=(50, 95, 99),
        goals={50: Goal("<=", 1.3, on="ratio")},
        baselines={50: "baseline.runc_run.p50", 95: "baseline.runc_run.p95",
                   99: "baseline.runc_run.p99"},
        plot=PLOT_CREATE, label="cloche cold create",
    )  # fmt: skip
    mean_total = sum(samples) / len(samples)
    accounted = 0.0
    for label, total in timer.totals.items():
        ms = total / n
        accounted += ms
        results.append(Result(key=f"runtime.cold.step.{label}", table=T_BREAKDOWN, metric=label,
                              value=ms, unit="ms", extra={"share": ms / mean_total}))  # fmt: skip
    results.append(Result(key="runtime.cold.step.other", table=T_BREAKDOWN, metric="other",
                          value=mean_total - accounted, unit="ms"))  # fmt: skip
    results.append(Result(key="runtime.cold.step.total", table=T_BREAKDOWN,
                          metric="total (mean cold create)", value=mean_total, unit="ms"))  # fmt: skip
    return results


# ---- 3. warm-pool claim -------------------------------------------------------------


async def bench_warm(n: int, pool_size: int) -> list[Result]:
    s = spec()
    total, claim_part, exec_part = [], [], []
    async with Node("warm", pool_size=pool_size, pool_limits=s.limits) as rt:
        log(f"runtime: warm pool of {pool_size} filling")
        await rt.pool.wait_ready(timeout=300)
        log(f"runtime: warm claim + first exec x{n}")
        timer = StepTimer()
        # Only the claimed record's save: the refill running meanwhile saves pooled ones.
        timer.wrap(rt.records, "save", "record save (write, fsync file + dir)", when=lambda rec: not rec.pooled)
        timer.wrap(rt, "adopt_from_pool", "adopt_from_pool (limits, record), in a thread")
        for i in range(n + 1):
            if i == 1:
                timer.totals.clear()  # sample 0 is a warm-up
            await rt.pool.wait_ready(timeout=300)
            claims = rt.pool.claims
            start = time.perf_counter()
            rec = await rt.create(s)
            mid = time.perf_counter()
            res = await rt.exec(rec.id, ExecRequest(cmd=list(TRUE)))
            end = time.perf_counter()
            if rt.pool.claims != claims + 1:
                raise RuntimeError("create did not claim from the warm pool")
            if res.exit_code != 0:
                raise RuntimeError(f"`true` exited {res.exit_code}")
            if i:  # sample 0 is a warm-up
                total.append((end - start) * 1000)
                claim_part.append((mid - start) * 1000)
                exec_part.append((end - mid) * 1000)
            await rt.kill(rec.id)
        timer.restore()
    results = latency_results(
        "runtime.warm", T_WARM, "claim + first exec", total, percentiles=(50, 95, 99),
        goals={50: Goal("<=", 10), 99: Goal("<=", 30)}, plot=PLOT_CREATE,
        label="cloche warm claim + first exec",
        note=f"pool_size={pool_size}; with n={n}, p99 is essentially the maximum.",
    )  # fmt: skip
    results += [
        Result(key="runtime.warm.claim.p50", table=T_WARM, metric="of which create (claim) p50",
               value=percentile(claim_part, 50), unit="ms"),
        Result(key="runtime.warm.claim.p99", table=T_WARM, metric="of which create (claim) p99",
               value=percentile(claim_part, 99), unit="ms"),
        Result(key="runtime.warm.exec.p50", table=T_WARM, metric="of which first exec p50",
               value=percentile(exec_part, 50), unit="ms"),
        Result(key="runtime.warm.exec.p99", table=T_WARM, metric="of which first exec p99",
               value=percentile(exec_part, 99), unit="ms"),
    ]  # fmt: skip
    for label, total in timer.totals.items():
        results.append(Result(key=f"runtime.warm.step.{label}", table=T_WARM,
                              metric=f"  inside: {label}, mean", value=total / n, unit="ms"))  # fmt: skip
    return results


# ---- 4. exec round trip and 5. throughput -------------------------------------------


def _host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def bench_exec(n: int, callers: int, duration: float) -> list[Result]:
    results: list[Result] = []
    async with Node("exec") as rt:
        rec = await rt.create(spec(), use_pool=False)
        for _ in range(50):
            await exec_true(rt, rec.id)
        log(f"runtime: exec round trip x{n}")
        samples = [await exec_true(rt, rec.id) for _ in range(n)]
        pings = []
        sock = rt.socket_path(rec.id)
        for _ in range(200):
            start = time.perf_counter()
            await ping(sock)
            pings.append((time.perf_counter() - start) * 1000)
        results += latency_results(
            "runtime.exec", T_EXEC, "exec `true`", samples, percentiles=(50, 95, 99),
            goals={50: Goal("<=", 1.5), 99: Goal("<=", 5)},
            baselines={50: "baseline.runc_exec.p50", 99: "baseline.runc_exec.p99"},
            plot=PLOT_EXEC, label="cloche exec (supervisor socket)",
        )  # fmt: skip
        results.append(Result(key="runtime.exec.vs_spawn", table=T_EXEC, unit="ms",
                              metric="exec `true` p50 vs host posix_spawn of true p50",
                              value=percentile(samples, 50), baseline="baseline.spawn.p50"))  # fmt: skip
        results += latency_results("runtime.ping", T_EXEC, "supervisor ping (no fork/exec)",
                                   pings, percentiles=(50, 99))  # fmt: skip

        spread = [rec.id] + [(await rt.create(spec(), use_pool=False)).id for _ in range(3)]
        whole = (await rt.create(spec(cpu=float(os.cpu_count() or 1)), use_pool=False)).id
        for b in [*spread, whole]:
            await exec_true(rt, b)
        results += await bench_throughput(rt, [rec.id], callers, duration, "runtime.tput.1", "1 sandbox",
                                          goal=Goal(">=", 2000))  # fmt: skip
        results += await bench_throughput(rt, spread, callers, duration, "runtime.tput.4", "4 sandboxes",
                                          goal=Goal(">=", 1000))  # fmt: skip
        # The same goal on a sandbox allowed every core: at cpu=1.0 the sandbox's own CPU per
        # spawn caps it below 2,000/s whatever the supervisor does (the floor rows below).
        results += await bench_throughput(rt, [whole], callers, duration, "runtime.tput.whole",
                                          f"1 sandbox with cpu={os.cpu_count()}", goal=Goal(">=", 2000))  # fmt: skip
        results += await spawn_floor(rt, rec.id, env_int("BENCH_FLOOR_N", 2000))
    return results


async def spawn_floor(rt: NodeRuntime, sandbox_id: str, n: int) -> list[Result]:
    """The sandbox CPU of spawning `true` from a shell loop inside the sandbox itself."""
    log(f"runtime: in-sandbox shell loop spawning /usr/bin/true x{n}")
    loop = f"i=0; while [ $i -lt {n} ]; do /usr/bin/true; i=$((i+1)); done"
    cg0, t0 = cgroup_cpu(rt, [sandbox_id]), time.perf_counter()
    res = await rt.exec(sandbox_id, ExecRequest(cmd=["/bin/sh", "-c", loop]))
    cg1, t1 = cgroup_cpu(rt, [sandbox_id]), time.perf_counter()
    if res.exit_code != 0:
        raise RuntimeError(f"the shell loop exited {res.exit_code}: {res.stderr!r}")
    per_spawn = (cg1[0] - cg0[0]) / n
    what = "in-sandbox shell loop spawning /usr/bin/true"
    return [
        Result(key="runtime.floor.cpu", table=T_TPUT, metric=f"{what}: sandbox CPU per spawn",
               value=per_spawn, unit="ms", note=f"Floor: {n} spawns in {t1 - t0:.2f} s from one shell loop."),
        Result(key="runtime.floor.rate", table=T_TPUT, metric=f"{what}: spawns/s one core allows (1000 / CPU ms)",
               value=1000 / per_spawn, unit="execs/s"),
    ]  # fmt: skip


def cgroup_cpu(rt: NodeRuntime, ids: list[str]) -> tuple[float, int, float]:
    """(CPU ms used, CFS periods throttled, ms throttled) summed over sandboxes' cgroups."""
    used, periods, throttled = 0.0, 0, 0.0
    for sid in ids:
        rel = rt._cgroup(sid).strip("/")
        used += cgroups.manager(rel).usage().cpu_usec / 1000
        v2 = cgroups.is_v2()
        stat = (cgroups.ROOT / rel if v2 else cgroups.ROOT / "cpu" / rel) / "cpu.stat"
        try:
            for line in stat.read_text().splitlines():
                name, val = line.split()
                if name == "nr_throttled":
                    periods += int(val)
                elif name == "throttled_usec":
                    throttled += int(val) / 1000
                elif name == "throttled_time":  # v1, ns
                    throttled += int(val) / 1e6
        except (OSError, ValueError):
            pass
    return used, periods, throttled


async def bench_throughput(rt: NodeRuntime, boxes: list[str], callers: int, duration: float, key: str,
                           where: str, goal: Goal | None = None) -> list[Result]:  # fmt: skip
    n_boxes = len(boxes)
    log(f"runtime: exec throughput, {callers} callers on {where}, {duration:g} s")
    lat: list[float] = []
    errors: list[BaseException] = []
    deadline = time.perf_counter() + duration

    async def caller(i: int) -> int:
        done = 0
        box = boxes[i % n_boxes]
        while time.perf_counter() < deadline:
            try:
                lat.append(await exec_true(rt, box))
                done += 1
            except Exception as exc:  # keep going; errors are reported
                errors.append(exc)
        return done

    cg0 = cgroup_cpu(rt, boxes)
    ru0, cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), _host_cpu(), time.perf_counter()
    counts = await asyncio.gather(*(caller(i) for i in range(callers)))
    ru1, cpu1, t1 = resource.getrusage(resource.RUSAGE_SELF), _host_cpu(), time.perf_counter()
    cg1 = cgroup_cpu(rt, boxes)
    elapsed = t1 - t0
    total = sum(counts)
    self_cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / elapsed
    ncpu = os.cpu_count() or 1
    host_busy = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]) * ncpu
    err = f"; {len(errors)} errors (first: {errors[0]!r})" if errors else "; no errors"
    return [
        Result(key=f"{key}.rate", table=T_TPUT, metric=f"execs/s, {callers} callers on {where}",
               value=total / elapsed, unit="execs/s", goal=goal,
               note=f"{where}: {total} execs in {elapsed:.2f} s{err}."),
        Result(key=f"{key}.p50", table=T_TPUT, metric=f"{where}: per-call latency p50",
               value=percentile(lat, 50), unit="ms"),
        Result(key=f"{key}.p99", table=T_TPUT, metric=f"{where}: per-call latency p99",
               value=percentile(lat, 99), unit="ms"),
        Result(key=f"{key}.self_cpu", table=T_TPUT,
               metric=f"{where}: runtime process CPU (one event loop)",
               value=self_cpu * 100, unit="% of a core"),
        Result(key=f"{key}.host_cpu", table=T_TPUT, metric=f"{where}: whole-host CPU busy",
               value=host_busy * 100, unit=f"% of a core (host max {100 * ncpu})"),
        Result(key=f"{key}.cpu_per_exec", table=T_TPUT, metric=f"{where}: host CPU per exec",
               value=host_busy * elapsed / max(1, total) * 1000, unit="ms"),
        Result(key=f"{key}.self_cpu_per_exec", table=T_TPUT,
               metric=f"{where}: of which runtime process (Python) CPU per exec",
               value=self_cpu * elapsed / max(1, total) * 1000, unit="ms"),
        Result(key=f"{key}.sandbox_cpu_per_exec", table=T_TPUT,
               metric=f"{where}: of which sandbox cgroup CPU per exec (cloche-init, `true`)",
               value=(cg1[0] - cg0[0]) / max(1, total), unit="ms"),
        Result(key=f"{key}.other_cpu_per_exec", table=T_TPUT,
               metric=f"{where}: of which the rest of the host (kernel threads, irqs, other processes)",
               value=(host_busy * elapsed - self_cpu * elapsed) / max(1, total) * 1000
               - (cg1[0] - cg0[0]) / max(1, total), unit="ms",
               note="The rest of the host includes any other workload on it during the window (see Run conditions)."),
        Result(key=f"{key}.throttled", table=T_TPUT,
               metric=f"{where}: CFS periods throttled by the cpu limit (100 ms each)",
               value=cg1[1] - cg0[1], unit="periods"),
        Result(key=f"{key}.throttled_ms", table=T_TPUT,
               metric=f"{where}: time throttled, summed over sandboxes",
               value=cg1[2] - cg0[2], unit="ms"),
    ]  # fmt: skip


# ---- 6. memory per idle sandbox -----------------------------------------------------


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, rest = line.split(":", 1)
        out[name] = int(rest.split()[0])  # kB
    return out


def settled_meminfo() -> dict[str, int]:
    os.sync()
    time.sleep(2)
    return meminfo()


def smaps_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, rest = line.split(":", 1)
            out[name] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


def sandbox_pids(rt: NodeRuntime, sandbox_id: str) -> set[int]:
    pids: set[int] = set()
    for d in cgroups.manager(rt._cgroup(sandbox_id)).paths():
        procs = d / "cgroup.procs"
        if procs.exists():
            pids.update(int(x) for x in procs.read_text().split())
    try:
        state = json.loads((rt.run / "runc" / sandbox_id / "state.json").read_text())
        pids.add(int(state["init_process_pid"]))
    except (OSError, ValueError, KeyError):
        pass
    return pids


def runc_processes() -> int:
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().startswith("runc"):
                    n += 1
            except OSError:
                continue
    return n


async def bench_memory(target: int, concurrency: int, memory_mb: int) -> list[Result]:
    results: list[Result] = []
    s = spec(disk_mb=64, memory_mb=memory_mb)
    measured = False
    cleanup_error: Exception | None = None
    try:
        async with Node("idle") as rt:
            warm = await rt.create(s, use_pool=False)  # builds the template, warms caches
            await rt.kill(warm.id)
            before = settled_meminfo()
            self_rss0 = smaps_kib(os.getpid()).get("Rss", 0)
            ids: list[str] = []
            create_ms: list[float] = []  # in completion order
            errors: list[BaseException] = []
            stop = asyncio.Event()
            progress = {"next": 0}

            async def create_one(_: int) -> None:
                if stop.is_set():
                    return
                start = time.perf_counter()
                try:
                    rec = await rt.create(s, use_pool=False)
                except Exception as exc:
                    errors.append(exc)
                    stop.set()  # a real limit: stop asking, keep what runs
                    return
                create_ms.append((time.perf_counter() - start) * 1000)
                ids.append(rec.id)
                if len(ids) >= progress["next"]:
                    log(f"  {len(ids)}/{target} idle sandboxes running")
                    progress["next"] += max(100, target // 10)

            log(f"runtime: creating {target} idle sandboxes, {concurrency} at a time")
            timer = StepTimer()  # how steps scale with the number of sandboxes on the host
            timer.wrap(rt.uids, "allocate", "uid range allocate (on the event loop)")
            timer.wrap(rt.driver, "run", "runc run -d")
            timer.wrap(linux, "mountpoints", "mountinfo scan (kill's teardown)")
            t0 = time.perf_counter()
            try:
                await gather_bounded(list(range(target)), create_one, concurrency)
            finally:
                create_s = time.perf_counter() - t0
            running = len(ids)
            try:
                after = settled_meminfo()
                self_rss1 = smaps_kib(os.getpid()).get("Rss", 0)
                pss_by_box, rss_total, proc_count, no_init = [], 0, 0, 0
                for sid in ids:
                    pids = sandbox_pids(rt, sid)
                    if not pids:
                        no_init += 1
                    roll = [smaps_kib(p) for p in pids]
                    pss_by_box.append(sum(r.get("Pss", 0) for r in roll))
                    rss_total += sum(r.get("Rss", 0) for r in roll)
                    proc_count += len(pids)
                runc_left = runc_processes()
                status = {}
                for c in json.loads(rt.driver._call("list", "--format", "json").stdout or "[]") or []:
                    status[c["id"]] = c["status"]
                not_running = [i for i in ids if status.get(i) != "running"]
                log(f"runtime: exec `true` in all {running} idle sandboxes")
                execs = await gather_bounded(ids, lambda i: exec_true(rt, i), 16)
                exec_failures = [e for e in execs if isinstance(e, BaseException)]
            finally:
                log(f"runtime: killing {running} idle sandboxes")
                t1 = time.perf_counter()
                try:
                    kill_errors = await kill_all(rt, list(ids), concurrency)
                finally:
                    kill_s = time.perf_counter() - t1
                    timer.restore()
            released = settled_meminfo()
            measured = True
            # Node.__aexit__ then checks that nothing is left on the host.
    except Exception as exc:
        if not measured:
            raise
        cleanup_error = exc

    n = max(1, running)
    pss_total = sum(pss_by_box)
    avail_drop = before["MemAvailable"] - after["MemAvailable"]
    avail_back = released["MemAvailable"] - after["MemAvailable"]
    kernel_kib = pss_total + sum(
        after.get(f, 0) - before.get(f, 0) for f in ("SUnreclaim", "KernelStack", "PageTables", "Percpu")
    )
    all_up = running == target and not not_running and not exec_failures and not no_init
    status_note = (
        f"{running}/{target} created in {create_s:.1f} s ({running / create_s:.0f}/s), "
        f"killed in {kill_s:.1f} s; runc status running: {running - len(not_running)}; "
        f"exec `true` ok: {running - len(exec_failures)}; processes in sandboxes: "
        f"{proc_count}; runc processes left on the host: {runc_left}."
    )
    if errors:
        status_note += f" Creation stopped at the first failure: {errors[0]!r}."
    if exec_failures:
        status_note += f" First exec failure: {exec_failures[0]!r}."
    if kill_errors:
        status_note += f" {len(kill_errors)} kill errors, first: {kill_errors[0]!r}."
    scaling: list[Result] = []  # its own table, after the memory one
    series = [("create (whole)", create_ms)] + list(timer.samples.items())
    for label, xs in series:
        if len(xs) < 2:
            continue
        tenth = max(1, len(xs) // 10)
        first, last = percentile(xs[:tenth], 50), percentile(xs[-tenth:], 50)
        key = f"runtime.mem.scaling.{slug(label)}"
        scaling += [
            Result(key=f"{key}.first", table=T_MEM_SCALE, unit="ms", value=first,
                   metric=f"{label}: p50 of the first {tenth} calls", label="first calls"),
            Result(key=f"{key}.last", table=T_MEM_SCALE, unit="ms", value=last,
                   metric=f"{label}: p50 of the last {tenth} calls", baseline=f"{key}.first"),
        ]  # fmt: skip
    results.append(Result(key="runtime.mem.running", table=T_MEM,
                          metric="idle sandboxes running at once (verified)",
                          value=running if all_up else running - len(not_running)
                          - len(exec_failures), unit="sandboxes", goal=Goal(">=", target),
                          note=status_note,
                          error=None if all_up else "not every requested sandbox was "
                          "running and answering; see note"))  # fmt: skip
    results += [
        Result(key="runtime.mem.pss", table=T_MEM,
               metric="PSS per sandbox (cloche-init and everything in its cgroup)",
               value=pss_total / n / 1024, unit="MiB", goal=Goal("<=", 3),
               plot=PLOT_MEM, label="PSS of sandbox processes",
               extra={"kib": pss_total / n}),
        Result(key="runtime.mem.pss_max", table=T_MEM, metric="PSS, largest single sandbox",
               value=max(pss_by_box, default=0) / 1024, unit="MiB"),
        Result(key="runtime.mem.pss_total", table=T_MEM, metric=f"PSS total for {running}",
               value=pss_total / 1024, unit="MiB"),
        Result(key="runtime.mem.rss", table=T_MEM, metric="RSS per sandbox (for comparison)",
               value=rss_total / n / 1024, unit="MiB"),
        Result(key="runtime.mem.avail", table=T_MEM,
               metric="host MemAvailable drop per sandbox (incl. kernel)",
               value=avail_drop / n / 1024, unit="MiB", plot=PLOT_MEM,
               label="MemAvailable drop", extra={"kib": avail_drop / n},
               note=f"MemAvailable {before['MemAvailable'] // 1024} MiB before, "
                    f"{after['MemAvailable'] // 1024} MiB after "
                    f"(total drop {avail_drop / 1024:.0f} MiB)."),
        Result(key="runtime.mem.avail_total", table=T_MEM, metric="host MemAvailable drop total",
               value=avail_drop / 1024, unit="MiB"),
        Result(key="runtime.mem.avail_back", table=T_MEM,
               metric="host MemAvailable regained per sandbox once all are killed",
               value=avail_back / n / 1024, unit="MiB",
               note="MemAvailable moves with everything else on the host too (AnonPages below is "
                    "mostly other processes), and the kernel frees some of a killed sandbox's memory "
                    "late (offline memory cgroups, RCU), so the drop on create and the gain on kill "
                    "are two rough samples of one figure; the kernel-objects row is steadier."),
        Result(key="runtime.mem.kernel_plus_pss", table=T_MEM,
               metric="unreclaimable slab + kernel stacks + page tables + percpu + PSS, per sandbox",
               value=kernel_kib / n / 1024, unit="MiB", plot=PLOT_MEM,
               label="kernel objects + PSS", extra={"kib": kernel_kib / n}),
        Result(key="runtime.mem.node_rss", table=T_MEM,
               metric="node runtime process RSS growth per sandbox", unit="MiB",
               value=(self_rss1 - self_rss0) / n / 1024),
    ]  # fmt: skip
    for field in ("Slab", "SUnreclaim", "KernelStack", "PageTables", "Percpu", "AnonPages",
                  "Shmem", "Cached", "Buffers", "MemFree"):  # fmt: skip
        if field not in before:
            continue
        delta = (after[field] - before[field]) if field != "MemFree" else (before[field] - after[field])
        label = f"{field} {'drop' if field == 'MemFree' else 'growth'} per sandbox"
        results.append(Result(key=f"runtime.mem.meminfo.{field}", table=T_MEM, metric=label,
                              value=delta / n, unit="KiB",
                              plot=PLOT_MEM if field in ("SUnreclaim", "KernelStack",
                                                         "PageTables", "Percpu") else None,
                              label=f"{field} growth"))  # fmt: skip
    results.append(Result(key="runtime.mem.leftovers", table=T_MEM,
                          metric="left on the host after killing them all", unit="items",
                          value=None if cleanup_error else 0,
                          error=repr(cleanup_error) if cleanup_error else None))  # fmt: skip
    for r in results:
        if r.plot == PLOT_MEM and r.unit == "MiB":
            r.label = f"{r.label} ({r.extra['kib']:.0f} KiB)"
    return results + scaling


# ---- entry point --------------------------------------------------------------------

KNOBS = [
    ("BENCH_COLD_N", "30", "cold create samples"),
    ("BENCH_WARM_N", "30", "warm-pool claim samples"),
    ("BENCH_POOL_SIZE", "4", "warm pool size"),
    ("BENCH_EXEC_N", "1000", "sequential exec samples"),
    ("BENCH_CALLERS", "16", "concurrent exec callers"),
    ("BENCH_THROUGHPUT_S", "5", "seconds per throughput run"),
    ("BENCH_FLOOR_N", "2000", "spawns of true in the in-sandbox shell loop (the floor)"),
    ("BENCH_IDLE_SANDBOXES", "1000", "idle sandboxes for the memory figure"),
    ("BENCH_IDLE_CONCURRENCY", "8", "concurrent creates/kills for them"),
    ("BENCH_IDLE_MEMORY_MB", "64", "their memory limit"),
    ("BENCH_DATA_DIR", "/var/tmp", "parent of the throwaway data dirs (not tmpfs)"),
    ("BENCH_ONLY", "", "runtime steps to run: cold,warm,exec,mem (default all)"),
]


def run() -> list[Result]:
    cfg = {
        "cold": env_int("BENCH_COLD_N", 30),
        "warm": env_int("BENCH_WARM_N", 30),
        "pool": env_int("BENCH_POOL_SIZE", 4),
        "exec": env_int("BENCH_EXEC_N", 1000),
        "callers": env_int("BENCH_CALLERS", 16),
        "duration": env_float("BENCH_THROUGHPUT_S", 5.0),
        "idle": env_int("BENCH_IDLE_SANDBOXES", 1000),
        "idle_conc": env_int("BENCH_IDLE_CONCURRENCY", 8),
        "idle_mem": env_int("BENCH_IDLE_MEMORY_MB", 64),
    }
    steps: list[tuple[str, str, Callable[[], Awaitable[list[Result]]]]] = [
        ("runtime.cold", T_COLD, lambda: bench_cold(cfg["cold"])),
        ("runtime.warm", T_WARM, lambda: bench_warm(cfg["warm"], cfg["pool"])),
        ("runtime.exec", T_EXEC, lambda: bench_exec(cfg["exec"], cfg["callers"], cfg["duration"])),
        ("runtime.mem", T_MEM, lambda: bench_memory(cfg["idle"], cfg["idle_conc"], cfg["idle_mem"])),
    ]  # fmt: skip
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    results: list[Result] = []
    for key, table, make in steps:
        if only and key.split(".")[1] not in only:
            continue
        note_conditions(f"before {key}")
        try:
            results += asyncio.run(make())
        except Exception as exc:
            log(f"{key} FAILED: {exc!r}")
            results.append(failed(f"{key}.error", table, "benchmark failed", exc))
    return results
