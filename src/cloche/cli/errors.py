"""The one place an API failure becomes what the user sees: a red ``error:`` line on
stderr and an exit status.

Every :class:`~cloche.client.errors.ClocheError` a command lets through, including
:class:`~cloche.client.errors.ConnectionFailed` when the server cannot be reached, ends
here by way of :class:`Group`, the root command group: status 1 (``sandbox exec`` uses
:func:`handled` itself to exit 125, as docker does).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup

from cloche.cli import ui
from cloche.client import ClocheError

EXIT_API_ERROR = 125
"""``sandbox exec`` exit status when the command could not be run at all (like docker)."""


def print_error(exc: ClocheError) -> None:
    """``error: MESSAGE (code)`` and, when the server gave one, when to retry."""
    ui.err.print(f"[red]error:[/] {exc.message} [dim]({exc.code})[/]", highlight=False)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        ui.err.print(f"[dim]retry after {retry_after:g}s[/]")


@contextmanager
def handled(exit_code: int = 1) -> Iterator[None]:
    """Turn a :class:`ClocheError` raised inside into its message and ``exit_code``."""
    try:
        yield
    except ClocheError as exc:
        print_error(exc)
        raise typer.Exit(exit_code) from None


class Group(TyperGroup):
    """The root group: every command runs inside :func:`handled`."""

    def invoke(self, ctx: typer.Context) -> Any:
        with handled():
            return super().invoke(ctx)
