"""``cloche db``: the control-plane database's schema version, and ``db upgrade``, which
brings it to this cloche's (the migrations are :mod:`cloche.store.migrations`).

A server on PostgreSQL refuses a schema older than its own, so that replicas sharing
one database never race to change it: the operator runs ``cloche db upgrade`` once,
before rolling the new version out. It is idempotent, and safe to run twice at once.
These commands talk to the database directly, not to a server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cloche.cli import ui
from cloche.cli.options import JsonOpt
from cloche.config import Settings
from cloche.store import migrations
from cloche.store.connect import open_engine
from cloche.store.db import database_url
from cloche.store.engine import Engine, sqlite_path, where

app = typer.Typer(help="The control-plane database: its schema version, and upgrading it.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", envvar="CLOCHE_DATABASE_URL", show_default=False,
                 help="sqlite:///PATH or postgresql://... (default: SQLite in DATA_DIR/cloche.db)."),
]  # fmt: skip
DataDirOpt = Annotated[Path, typer.Option("--data-dir", envvar="CLOCHE_DATA_DIR", help="The server's data directory.")]


def _say(message: str) -> None:
    """A note on stderr, never wrapped: it names a path or URL to copy."""
    ui.err.print(message, highlight=False, soft_wrap=True)


def _url(url: str | None, data_dir: Path) -> str:
    return url or database_url(Settings(data_dir=data_dir).db_path)


def _exists(url: str) -> bool:
    return not url.startswith("sqlite:///") or Path(sqlite_path(url)).exists()


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """The database, or a red `error:` line and status 1 when it cannot be opened."""
    try:
        engine = open_engine(url)
    except (ValueError, OSError) as exc:
        _say(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    try:
        yield engine
    finally:
        engine.close()


def _pending(engine: Engine) -> list[migrations.Migration]:
    try:
        return migrations.pending(engine)
    except migrations.SchemaMismatch as exc:
        _say(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


@app.command("version")
def db_version(url: UrlOpt = None, data_dir: DataDirOpt = Path(".cloche"), as_json: JsonOpt = False) -> None:
    """Show the database's schema version, this cloche's, and the migrations between them."""
    url = _url(url, data_dir)
    if not _exists(url):
        _say(f"[red]error:[/] no database at {where(url)}")
        raise typer.Exit(1)
    with _engine(url) as engine:
        version = migrations.current_version(engine)
        todo = [] if version > migrations.LATEST else _pending(engine)
    if as_json:
        ui.print_json({"database": where(url), "version": version, "latest": migrations.LATEST,
                       "pending": [m.version for m in todo]})  # fmt: skip
        return
    state = ("[green]up to date[/]" if version == migrations.LATEST
             else "[red]newer than this cloche[/]" if version > migrations.LATEST
             else f"[yellow]{len(todo)} migration(s) pending[/]: run cloche db upgrade")  # fmt: skip
    ui.out.print(ui.details([("database", where(url)), ("version", str(version)),
                             ("this cloche", str(migrations.LATEST)), ("state", state)]))  # fmt: skip


@app.command("upgrade", epilog="Example: cloche db upgrade --database-url postgresql://cloche@db/cloche")
def db_upgrade(
    url: UrlOpt = None,
    data_dir: DataDirOpt = Path(".cloche"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the migrations to apply; change nothing.")] = False,
) -> None:
    """Apply the schema migrations the database lacks, one transaction each (idempotent)."""
    url = _url(url, data_dir)
    if dry_run and not _exists(url):
        todo, version = list(migrations.MIGRATIONS), 0
    else:
        with _engine(url) as engine:
            version, todo = migrations.current_version(engine), _pending(engine)
            if todo and not dry_run:
                _apply(engine, todo)
    if not todo:
        _say(f"{where(url)}: up to date at schema version {version}")
    elif dry_run:
        table = ui.table("VERSION", "DESCRIPTION", right=("VERSION",))
        for m in todo:
            table.add_row(str(m.version), m.description)
        ui.out.print(table, highlight=False)
        _say(f"dry run: {len(todo)} migration(s) would take {where(url)} from schema version {version} "
                     f"to {migrations.LATEST}")  # fmt: skip
    else:
        _say(f"{where(url)}: schema version {version} -> {migrations.LATEST}")


def _apply(engine: Engine, todo: list[migrations.Migration]) -> None:
    for m in todo:
        start = time.monotonic()
        with ui.spinner(f"applying {m.version}: {m.description}"):
            applied = migrations.apply(engine, m)
        took = f"{(time.monotonic() - start) * 1000:.0f} ms"
        note = f"[green]applied[/] in {took}" if applied else "[dim]already applied by another upgrader[/]"
        _say(f"  {m.version} {m.description}: {note}")
