"""Which `cloche` subcommands and options the deployment files may name.

Why it exists: a manifest that starts `cloche node run --etcd ...` is only right if that
command takes that option, and nothing else checks a YAML file's argument list. The
answer comes from the real CLI (`python -m cloche.cli <subcommand> --help`) once the
subcommand has every option of the cluster process contract; until the cluster
processes land (`cloche server`, `cloche node drain`, `cloche node run --etcd`), it
comes from the contract below, which is what the manifests are written against.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import warnings

# The commands the deployment files run, with the options the cluster process contract
# (issue #15) promises them.
# `node drain --data-dir` (drain the node whose data dir this is) is the manifests' own
# assumption; the contract names the command but not its options.
CONTRACT: dict[tuple[str, ...], frozenset[str]] = {
    ("server",): frozenset("--listen --data-dir --cluster-dir --etcd".split()),
    ("node", "run"): frozenset(
        "--listen --data-dir --cluster-dir --etcd --node-id --region --zone --pool-size --name --on-shutdown".split()
    ),
    ("node", "drain"): frozenset({"--data-dir"}),
    ("db", "upgrade"): frozenset(),  # exists already: checked against the real CLI
}
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def split(argv: list[str]) -> tuple[tuple[str, ...], set[str]]:
    """A `cloche` argument list as (subcommand path, option names)."""
    path = tuple(next((argv[:i] for i, a in enumerate(argv) if a.startswith("-")), argv))
    return path, {a.split("=", 1)[0] for a in argv if a.startswith("--")}


@functools.cache
def live_options(path: tuple[str, ...]) -> frozenset[str] | None:
    """The options `cloche <path> --help` lists, or None when there is no such subcommand."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-m", "cloche.cli", *path, "--help"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    if done.returncode != 0:
        return None
    return frozenset(_OPTION.findall(done.stdout)) - {"--help"}


def allowed_options(path: tuple[str, ...]) -> frozenset[str]:
    """What a deployment file may pass to `cloche <path>`: the real CLI's options when it
    has the whole contract, else those and the contract's (with a warning naming what the
    CLI lacks so far)."""
    assert path in CONTRACT, f"`cloche {' '.join(path)}` is not a cluster process command"
    live = live_options(path) or frozenset()
    if CONTRACT[path] <= live:
        return live
    missing = sorted(CONTRACT[path] - live)
    warnings.warn(f"`cloche {' '.join(path)}` lacks {missing} so far: checked against the contract", stacklevel=2)
    return CONTRACT[path] | live


def check(argv: list[str], where: str) -> None:
    """Fail unless `argv` (what follows `cloche`) is a cluster command with options it takes."""
    path, options = split(argv)
    unknown = sorted(options - allowed_options(path))
    assert not unknown, f"{where}: `cloche {' '.join(path)}` takes no {unknown}"
