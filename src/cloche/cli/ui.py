"""How the CLI talks to its user, so every command looks and pipes alike.

Results go to :data:`out` (stdout: ids, tables, JSON, file contents); progress, spinners,
notes and errors go to :data:`err` (stderr), so ``ID=$(cloche sandbox create)`` works.
Commands reach the consoles as ``ui.out``/``ui.err`` (looked up when they print), which
lets tests swap them.  The helpers here are the shared cell formats (times, sizes, idle
policies), the two table shapes, and the rich progress bar and spinner.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from cloche.client.models import IdlePolicy


def _console(stream: IO[str]) -> Console:
    # Off a terminal (pipes, tests) render tables wide enough that ids are never cut.
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(file=stream, width=200 if wide else None, soft_wrap=False)


T = TypeVar("T")

out = _console(sys.stdout)
err = _console(sys.stderr)


def print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    """A model, a list of them or plain data as JSON on stdout (``--json``)."""

    def dump(v: Any) -> Any:
        return v.model_dump(mode="json") if hasattr(v, "model_dump") else v

    data = [dump(v) for v in value] if isinstance(value, list) else dump(value)
    out.print_json(json.dumps(data), highlight=False)


def show(value: T, as_json: bool, view: Callable[[T], RenderableType], empty: str | None = None) -> None:
    """A command's result: ``--json`` prints ``value`` as JSON; otherwise ``view(value)``
    goes to stdout, or, for an empty list with an ``empty`` note, the note to stderr."""
    if as_json:
        print_json(value)
    elif empty is not None and not value:
        err.print(empty)
    else:
        out.print(view(value))


def created(value: BaseModel, ident: str, as_json: bool) -> None:
    """What a command that makes something prints: its id alone (for ``ID=$(...)``), or
    with ``--json`` the whole object."""
    if as_json:
        print_json(value)
    else:
        out.print(ident, highlight=False)


def table(*columns: str, right: Iterable[str] = ()) -> Table:
    """A borderless listing with bold headers; the ``right`` columns are right-aligned."""
    aligned = set(right)
    result = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        result.add_column(column, justify="right" if column in aligned else "left", no_wrap=True)
    return result


def details(rows: Iterable[tuple[str, str]], wrap: bool = True) -> Table:
    """One object as ``key  value`` lines (keys bold); ``wrap=False`` keeps values on one line."""
    result = Table(box=None, show_header=False, pad_edge=False)
    result.add_column(style="bold", no_wrap=True)
    result.add_column(no_wrap=not wrap)
    for key, value in rows:
        result.add_row(key, value)
    return result


def when(dt: datetime | None) -> str:
    """A short relative time: ``12s ago`` or ``in 4m``."""
    if dt is None:
        return "-"
    delta = (dt - datetime.now(UTC)).total_seconds()
    n = abs(delta)
    text = (
        f"{n:.0f}s"
        if n < 60
        else f"{n / 60:.0f}m"
        if n < 3600
        else f"{n / 3600:.0f}h"
        if n < 86400
        else f"{n / 86400:.0f}d"
    )
    return f"in {text}" if delta > 0 else f"{text} ago"


def size(n: float) -> str:
    """Bytes in binary units: ``512B``, ``1.5K``, ``2.0G``."""
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def state_style(state: str) -> str:
    """The rich style of a sandbox or agent state ("" for none)."""
    styles = {"running": "green", "paused": "yellow", "hibernated": "blue", "creating": "cyan", "stopped": "dim"}
    return styles.get(state, "")


def styled_state(state: str) -> str:
    """A state as rich markup in its style."""
    style = state_style(state)
    return f"[{style}]{state}[/]" if style else state


def idle_text(idle: IdlePolicy | None) -> str:
    """An idle policy in words: ``pause 60s, hibernate 600s``, ``never`` or ``default``."""
    if idle is None:
        return "default"
    parts = []
    if idle.pause_after_s is not None:
        parts.append(f"pause {idle.pause_after_s:g}s")
    if idle.hibernate_after_s is not None:
        parts.append(f"hibernate {idle.hibernate_after_s:g}s")
    return ", ".join(parts) or "never"


@contextmanager
def transfer(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields an ``advance(nbytes)`` callback. Once every
    byte of a known total is sent, the line says the server is still working on them."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=total)
        sent = 0

        def advance(n: int) -> None:
            nonlocal sent
            sent += n
            progress.advance(task, n)
            if total and sent >= total:
                progress.update(task, description=f"{description}: sent, the server is working on it")

        yield advance


@contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long call runs (a terminal only:
    piped output stays free of control codes)."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                        transient=True, disable=not err.is_terminal)  # fmt: skip
    with progress:
        progress.add_task(message, total=None)
        yield


def cores(n: float | None) -> str:
    """A CPU count (``1.5``), or ``-`` when unset."""
    return f"{n:g}" if n is not None else "-"


def mib(n: int | None) -> str:
    """A size in MiB (``512 MiB``), or ``-`` when unset."""
    return f"{n} MiB" if n is not None else "-"
