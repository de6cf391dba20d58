"""Which `cloche` subcommands and options the deployment files may name.

Why it exists: a manifest that starts `cloche node run --etcd ...` is only right if that
command takes that option, and nothing else checks a YAML file's argument list. The
answer comes from the real CLI (`python -m cloche.cli <subcommand> --help`); the contract
below is what the deployment files rely on each command to take, so a CLI that drops one
of those options fails here, not on a cluster.
"""

from __future__ import annotations

import functools
import os
import re

from tests.cli_zygote import run_cli

# The commands the deployment files run, with the options they pass them.
CONTRACT: dict[tuple[str, ...], frozenset[str]] = {
    ("server",): frozenset("--listen --data-dir --cluster-dir --etcd".split()),
    ("node", "run"): frozenset(
        "--listen --data-dir --cluster-dir --etcd --node-id --region --zone --pool-size --name --on-shutdown".split()
    ),
    ("node", "drain"): frozenset("--etcd --node-id --timeout-s".split()),
    ("db", "upgrade"): frozenset(),
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
    done = run_cli([*path, "--help"], text=True, env=env, timeout=60)
    if done.returncode != 0:
        return None
    return frozenset(_OPTION.findall(done.stdout)) - {"--help"}


def allowed_options(path: tuple[str, ...]) -> frozenset[str]:
    """What a deployment file may pass to `cloche <path>`: the real CLI's options, which
    must include the contract's."""
    assert path in CONTRACT, f"`cloche {' '.join(path)}` is not a command the deployment files run"
    live = live_options(path)
    assert live is not None, f"`cloche {' '.join(path)} --help` failed"
    missing = sorted(CONTRACT[path] - live)
    assert not missing, f"`cloche {' '.join(path)}` lacks {missing}"
    return live


def check(argv: list[str], where: str) -> None:
    """Fail unless `argv` (what follows `cloche`) is a cluster command with options it takes."""
    path, options = split(argv)
    unknown = sorted(options - allowed_options(path))
    assert not unknown, f"{where}: `cloche {' '.join(path)}` takes no {unknown}"
