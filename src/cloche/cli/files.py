"""``cloche files``: read, write, list, move and delete files inside a sandbox, and move
whole trees in and out as tar archives, with progress bars for the large ones."""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect, handle, open_local
from cloche.client.models import Entry

app = typer.Typer(help="Read, write and list files inside a sandbox.", no_args_is_help=True)


def _mode_string(entry: Entry) -> str:
    kind = {"dir": "d", "symlink": "l", "file": "-"}.get(entry.type, "?")
    bits = "".join(ch if entry.mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return kind + bits


def _entry_table(entries: list[Entry]) -> Table:
    table = ui.table("MODE", "SIZE", "MODIFIED", "NAME", right=["SIZE"])
    for e in sorted(entries, key=lambda e: (not e.is_dir, e.name)):
        name = f"[bold blue]{e.name}/[/]" if e.is_dir else e.name
        if e.type == "symlink":
            name = f"[cyan]{e.name}[/] -> {e.target}"
        modified = datetime.fromtimestamp(e.mtime).strftime("%Y-%m-%d %H:%M")
        table.add_row(_mode_string(e), ui.size(e.size), modified, name)
    return table


@app.command("get")
def files_get(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="File in the sandbox.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this local file (or into this directory) instead of stdout."),
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download a file (to stdout, or to a local file with -o)."""
    if output is not None and output.is_dir():
        output = output / PurePosixPath(path).name
    with connect(url, api_key) as client:
        files = handle(client, sandbox_id).files
        if output is None:
            sys.stdout.flush()
            files.download(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        total = files.stat(path).size
        partial = output.with_name(f".{output.name}.part")
        try:
            with partial.open("wb") as f, ui.transfer(f"get {path}", total) as advance:
                n = files.download(path, f, on_progress=advance)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    ui.err.print(f"wrote {ui.size(n)} to {output}", highlight=False)


@app.command("put")
def files_put(
    sandbox_id: SandboxId,
    local: Annotated[str, typer.Argument(help="Local file, or - for stdin.", show_default=False)],
    path: Annotated[str, typer.Argument(help="Destination path in the sandbox.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a local file (or stdin) to a path in the sandbox.

    A PATH ending in / is a directory: the file keeps its local name there.
    """
    if local == "-":
        with connect(url, api_key) as client:
            result = handle(client, sandbox_id).files.write(path, sys.stdin.buffer.read())
    else:
        src = Path(local)
        if src.is_dir():
            raise typer.BadParameter(f"{local} is a directory; use `cloche files upload`", param_hint="LOCAL")
        if path.endswith("/"):
            path += src.name
        with (
            open_local(src, "LOCAL") as f,
            connect(url, api_key) as client,
            ui.transfer(f"put {src.name}", os.fstat(f.fileno()).st_size) as advance,
        ):
            result = handle(client, sandbox_id).files.write(path, f, on_progress=advance)
    ui.err.print(f"wrote {ui.size(result.size)} to {result.path}", highlight=False)


@app.command("ls")
def files_ls(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory in the sandbox.")] = "/workspace",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List a directory."""
    with connect(url, api_key) as client:
        entries = handle(client, sandbox_id).files.list(path)
    ui.show(entries, as_json, _entry_table)


@app.command("rm")
def files_rm(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="File or directory in the sandbox.", show_default=False)],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Remove directories and their contents.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete a file (or, with -r, a directory tree)."""
    with connect(url, api_key) as client:
        handle(client, sandbox_id).files.remove(path, recursive=recursive)


@app.command("mkdir")
def files_mkdir(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory to create.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a directory."""
    with connect(url, api_key) as client:
        handle(client, sandbox_id).files.mkdir(path)


@app.command("mv")
def files_mv(
    sandbox_id: SandboxId,
    src: Annotated[str, typer.Argument(help="Existing path.", show_default=False)],
    dst: Annotated[str, typer.Argument(help="New path.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Rename or move a file or directory."""
    with connect(url, api_key) as client:
        handle(client, sandbox_id).files.rename(src, dst)


@app.command("upload")
def files_upload(
    sandbox_id: SandboxId,
    local: Annotated[
        Path, typer.Argument(help="Local directory, or a .tar/.tar.gz archive.", exists=True, show_default=False)
    ],
    path: Annotated[str, typer.Argument(help="Directory in the sandbox to extract into.")] = "/workspace",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a directory tree (or a tar archive) and extract it in the sandbox."""
    with tempfile.TemporaryFile() if local.is_dir() else local.open("rb") as body:
        if local.is_dir():
            with ui.spinner(f"Packing {local}…"), tarfile.open(fileobj=body, mode="w:gz") as tar:
                for child in sorted(local.iterdir()):
                    tar.add(child, arcname=child.name)
            body.seek(0)
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        with connect(url, api_key) as client, ui.transfer(f"upload {local.name}", size) as advance:
            report = handle(client, sandbox_id).upload_tar(path, body, on_progress=advance)
    ui.err.print(
        f"extracted {report.files} files, {report.dirs} dirs, {report.links} links "
        f"({ui.size(report.bytes)}) into {path}",
        highlight=False,
    )
    for skipped in report.skipped:
        ui.err.print(f"[yellow]skipped[/] {skipped.name}: {skipped.reason}", highlight=False)


@app.command("download")
def files_download(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory (or file) in the sandbox.")] = "/workspace",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the tar here ('-' for stdout).")] = None,
    extract: Annotated[
        Path | None, typer.Option("--extract", "-x", help="Extract into this local directory instead.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download a directory tree as a tar archive (or extract it locally with -x)."""
    if output is not None and extract is not None:
        raise typer.BadParameter("use either --output or --extract", param_hint="--output")
    with connect(url, api_key) as client:
        sbx = handle(client, sandbox_id)
        if extract is not None:
            with tempfile.TemporaryFile() as spool:
                with ui.transfer(f"download {path}", None) as advance:
                    n = sbx.download_tar_to(path, spool, on_progress=advance)
                spool.seek(0)
                extract.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=spool, mode="r:*") as tar:
                    tar.extractall(extract, filter="data")
            ui.err.print(f"extracted {ui.size(n)} into {extract}", highlight=False)
            return
        if output is None or str(output) == "-":
            if sys.stdout.isatty():
                raise typer.BadParameter("refusing to write a tar to a terminal; use -o FILE or -x DIR")
            n = sbx.download_tar_to(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        with output.open("wb") as f, ui.transfer(f"download {path}", None) as advance:
            n = sbx.download_tar_to(path, f, on_progress=advance)
    ui.err.print(f"wrote {ui.size(n)} to {output}", highlight=False)
