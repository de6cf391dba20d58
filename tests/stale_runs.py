"""Before the suite (`make test` runs `python -m tests.stale_runs`): sweep what an earlier
test run left on this host when it was killed mid-way (a timeout, a lost session, a
SIGKILL), so the leak check at the end judges this run alone.

Why it is needed: a node that dies keeps its runtime directory on purpose (its restart on
the same data dir reconciles it, and `cloche node gc` leaves nodes whose data dir still
exists alone). A killed test run never restarts its nodes, so their runtime directories,
containers and claims would stay until someone deletes their data dirs.

Only test data is touched: the local clusters the tests make under /var/tmp
(`cloche-cluster-*`, `cloche-clusterlocal-*`) and pytest's own temporary trees, and only
when no live process uses them (names them on its command line, runs in them or holds a
file in them open). Removing a stale data dir turns its node into an orphan, and
`cloche node gc` then removes its containers, mounts, cgroups, links and claims.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cloche.cluster.local.netns import sweep_stale

CLUSTER_ROOTS = ("cloche-cluster-*", "cloche-clusterlocal-*")  # under /var/tmp


def paths_in_use() -> list[str]:
    """Every path a live process names on its command line, runs in or holds open."""
    used = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        proc = Path("/proc") / pid
        try:
            used.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            used.append(os.readlink(proc / "cwd"))
            used += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # the process exited meanwhile, or its fds are not ours to read
            continue
    return used


def stale_test_dirs() -> list[Path]:
    """The test data dirs no live process uses; pytest's trees only while no pytest runs
    (a test between two files may hold nothing open in its tree)."""
    used = paths_in_use()
    roots = [root for pattern in CLUSTER_ROOTS for root in Path("/var/tmp").glob(pattern)]
    if not any("pytest" in u for u in used):
        roots += Path("/tmp").glob("pytest-of-*/pytest-*")
    return [root for root in roots if root.is_dir() and not any(str(root) in u for u in used)]


def main() -> int:
    stale = stale_test_dirs()
    for root in stale:
        shutil.rmtree(root, ignore_errors=True)
    if stale:
        print(f"removed {len(stale)} data dirs of earlier test runs that no process uses", file=sys.stderr)
    if swept := sweep_stale():
        print(f"removed the region namespaces of {len(swept)} dead local clusters", file=sys.stderr)
    # their nodes are orphans now: remove what they left on the host
    return subprocess.run([sys.executable, "-m", "cloche.cli", "node", "gc"], stdout=subprocess.DEVNULL).returncode


if __name__ == "__main__":
    sys.exit(main())
