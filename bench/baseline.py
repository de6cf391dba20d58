"""Raw runc baselines, measured in the same run as the cloche figures they anchor.

The bundle is as close to a cloche sandbox as raw runc gets: the very config.json that
cloche's bundle.build_config produces (same namespaces including the user namespace
mapping 0 -> a uid >= 1<<24, same seccomp profile, masked paths, cgroup limits and
mounts, with the host's /usr bound read-only), but on a plain directory rootfs: no
per-sandbox disk image, loop device, idmapped template mount, overlay, record or
supervisor. Only the process differs: `/usr/bin/true` for `runc run`, and
`/usr/bin/sleep 100000` for the container that `runc exec` targets.

Everything lives under /run/cloche-bench (its own runc --root and cgroup parent
/cloche-bench) and is removed at the end, whatever happened.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from results import Result, env_int, latency_results, log, note_conditions

from cloche.node import cgroups
from cloche.node.bundle import UID_RANGE, HostBind, build_config
from cloche.node.spec import Limits
from cloche.node.uids import UidAllocator

ROOT = Path("/run/cloche-bench")
STATE = ROOT / "runc"
CGROUP_PARENT = "/cloche-bench"
INIT_BINARY = Path(__file__).resolve().parent.parent / "src" / "cloche" / "_bin" / "cloche-init"
TABLE_RUN = "Baseline: raw runc run (cold, /bin/true)"
TABLE_EXEC = "Baseline: raw runc exec of true"
TABLE_SPAWN = "Baseline: host posix_spawn of /usr/bin/true (no container)"
OWNER = "cloche-bench-baseline"

KNOBS = [
    ("BENCH_RUNC_RUN_N", "30", "raw `runc run` samples"),
    ("BENCH_RUNC_EXEC_N", "100", "raw `runc exec` samples"),
    ("BENCH_SPAWN_N", "1000", "host posix_spawn of true samples"),
]

DESCRIPTIONS = {
    TABLE_RUN: (
        "`runc run` (foreground) of a fresh container id per sample, timed from "
        "posix_spawn of runc to its exit (container created, started, `/usr/bin/true` run, "
        "container destroyed). Same config.json as a cloche sandbox (bundle.build_config) "
        "on a plain directory rootfs with the host's /usr bound read-only; one unmeasured "
        "warm-up run."
    ),
    TABLE_EXEC: (
        "`runc exec <id> /usr/bin/true` into a raw container running `/usr/bin/sleep 100000`, "
        "timed from posix_spawn of runc to its exit; three unmeasured warm-up execs."
    ),
    TABLE_SPAWN: (
        "posix_spawn + waitpid of `/usr/bin/true` directly on the host from this Python "
        "process: the floor under any exec (no namespaces, cgroup, seccomp or supervisor); "
        "ten unmeasured warm-up spawns."
    ),
}


def _runc() -> str:
    found = shutil.which("runc")
    if not found:
        raise RuntimeError("runc is not installed")
    return found


def _spawn_wait(argv: list[str]) -> tuple[int, float]:
    """posix_spawn + waitpid (as cloche's driver does); returns (exit code, ms)."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = (time.perf_counter() - start) * 1000
    finally:
        os.close(devnull)
    return os.waitstatus_to_exitcode(status), elapsed


def _path_arg(bundle: Path, param: str) -> str:
    """Host paths build_config binds into the sandbox (the supervisor binary or the
    package's bin dir, the per-sandbox host dir, ...): real ones, made in the bundle."""
    path = bundle / param
    if param.endswith("_dir"):
        shutil.copytree(INIT_BINARY.parent, path)
    elif "init" in param or "binary" in param:
        shutil.copy2(INIT_BINARY, path)
    else:
        raise RuntimeError(f"baseline: build_config has a parameter it cannot fill: {param}")
    os.chmod(path, 0o755)
    return str(path)


def _make_bundle(name: str, uid_base: int, args: list[str]) -> Path:
    bundle = ROOT / "bundles" / name
    rootfs = bundle / "rootfs"
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    binds = [HostBind("/usr", "/usr")]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / link
        if host.is_symlink():
            os.symlink(os.readlink(host).lstrip("/"), rootfs / link)
        elif host.is_dir():  # a host without merged /usr
            binds.append(HostBind(str(host), f"/{link}"))
    known: dict[str, Any] = {
        "sandbox_id": name,
        "uid_base": uid_base,
        "limits": Limits(),
        "binds": binds,
        "cgroup_path": f"{CGROUP_PARENT}/{name}",
        "swap_control": cgroups.swap_control(),
    }
    params = inspect.signature(build_config).parameters.values()  # those with defaults keep them
    config = build_config(**{p.name: known[p.name] if p.name in known else _path_arg(bundle, p.name)
                             for p in params if p.name in known or p.default is p.empty})  # fmt: skip
    config["process"]["args"] = args
    # Every bind target must exist: the sandbox's root cannot create it in a root-owned
    # rootfs (the runtime's templates carry these mount points too).
    for m in config["mounts"]:
        target = rootfs / m["destination"].lstrip("/")
        if m["type"] != "bind" or target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(m["source"]).is_dir():
            target.mkdir()
        else:
            target.touch()
    (bundle / "config.json").write_text(json.dumps(config))
    for d in (ROOT, ROOT / "bundles", bundle):
        os.chmod(d, 0o711)
    return bundle


def _cleanup(runc: str) -> None:
    if STATE.is_dir():
        for entry in STATE.iterdir():
            _spawn_wait([runc, "--root", str(STATE), "delete", "--force", entry.name])
    shutil.rmtree(ROOT, ignore_errors=True)
    cgroups.remove_tree(CGROUP_PARENT)


def run() -> list[Result]:
    n_run = env_int("BENCH_RUNC_RUN_N", 30)
    n_exec = env_int("BENCH_RUNC_EXEC_N", 100)
    runc = _runc()
    base = [runc, "--root", str(STATE)]
    uids = UidAllocator()
    index = uids.allocate(OWNER)
    uid_base = UidAllocator.base(index)
    assert uid_base >= 1 << 24 and UID_RANGE == 65536
    results: list[Result] = []
    note_conditions("before baseline")
    _cleanup(runc)
    try:
        ROOT.mkdir(parents=True)
        STATE.mkdir()

        # runc run, cold: a new container each time.
        bundle = _make_bundle("run", uid_base, ["/usr/bin/true"])
        log(f"baseline: raw runc run x{n_run} (uid base {uid_base})")
        samples = []
        for i in range(n_run + 1):
            code, ms = _spawn_wait(base + ["run", "--bundle", str(bundle), f"bench-run-{i}"])
            if code != 0:
                raise RuntimeError(f"runc run exited {code}")
            if i:  # sample 0 is the warm-up
                samples.append(ms)
        results += latency_results(
            "baseline.runc_run", TABLE_RUN, "runc run", samples,
            plot="Sandbox create latency (CDF)", label="raw runc run of /bin/true",
        )  # fmt: skip

        # runc exec of true into a running raw container.
        bundle = _make_bundle("exec", uid_base, ["/usr/bin/sleep", "100000"])
        code, _ = _spawn_wait(base + ["run", "--detach", "--bundle", str(bundle), "bench-exec"])
        if code != 0:
            raise RuntimeError(f"runc run --detach exited {code}")
        log(f"baseline: raw runc exec x{n_exec}")
        samples = []
        for i in range(n_exec + 3):
            code, ms = _spawn_wait(base + ["exec", "bench-exec", "/usr/bin/true"])
            if code != 0:
                raise RuntimeError(f"runc exec exited {code}")
            if i >= 3:
                samples.append(ms)
        results += latency_results(
            "baseline.runc_exec", TABLE_EXEC, "runc exec", samples,
            plot="Exec round trip of `true` (CDF)", label="raw runc exec",
        )  # fmt: skip

        # The floor: spawning `true` on the host, no container, no supervisor.
        n_spawn = env_int("BENCH_SPAWN_N", 1000)
        log(f"baseline: host posix_spawn of /usr/bin/true x{n_spawn}")
        samples = [_spawn_wait(["/usr/bin/true"])[1] for _ in range(n_spawn + 10)][10:]
        results += latency_results(
            "baseline.spawn", TABLE_SPAWN, "host spawn of true", samples,
            plot="Exec round trip of `true` (CDF)", label="host posix_spawn (no container)",
        )  # fmt: skip
    finally:
        _cleanup(runc)
        uids.release(index)
    left = [p for p in (ROOT,) if p.exists()] + cgroups.leftovers(CGROUP_PARENT)
    if left:
        raise RuntimeError(f"baseline left things behind: {left}")
    return results
