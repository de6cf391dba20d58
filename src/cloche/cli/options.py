"""What every command shares on its way in: the ``--url``/``--api-key``/``--json``
options, the client they build, and the parsing of repeated ``KEY=VALUE`` flags and of
stdin, so each command module declares only its own options.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from cloche.client import Client, Sandbox
from cloche.client._base import DEFAULT_URL, ENV_API_KEY, ENV_URL
from cloche.client.models import SandboxInfo

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar=ENV_URL, show_envvar=True, help=f"Server URL (default: {DEFAULT_URL})."),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar=ENV_API_KEY, show_envvar=True, help="API key (tenant or admin)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a human-readable view.")]
SandboxId = Annotated[str, typer.Argument(help="Sandbox id.", show_default=False)]


def connect(url: str | None, api_key: str | None) -> Client:
    """The client of a command (``None``: the environment's URL and key)."""
    return Client(url=url, api_key=api_key)


def handle(client: Client, sandbox_id: str) -> Sandbox:
    """A handle without a round trip (state unknown); the first real call reports a bad id."""
    return Sandbox(client, SandboxInfo(id=sandbox_id, state="unknown"))


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """Parse repeated ``K=V`` options into a dict."""
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        result[key] = value
    return result


def idle_policy(pause: float | None, hibernate: float | None) -> dict[str, float] | None:
    """The idle policy of ``--idle-pause``/``--idle-hibernate`` (None: neither given)."""
    policy = {k: v for k, v in (("pause_after_s", pause), ("hibernate_after_s", hibernate)) if v is not None}
    return policy or None


def piped_stdin() -> bool:
    """Whether stdin is a pipe or a file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def open_local(path: str | Path, param_hint: str) -> BinaryIO:
    """A local file opened for reading, or a usage error naming the file and the option it came from."""
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=param_hint) from None


def read_local(path: str | Path, param_hint: str) -> bytes:
    """A local file's bytes, or a usage error (see `open_local`)."""
    with open_local(path, param_hint) as f:
        return f.read()
