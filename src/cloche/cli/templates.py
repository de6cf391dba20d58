"""``cloche template``: list the templates sandboxes start from, import a rootfs tarball
as one (admin key) and delete one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect
from cloche.client.models import TemplateInfo

app = typer.Typer(help="List, import and delete templates (importing needs the admin key).",
                  no_args_is_help=True)  # fmt: skip


def _template_table(templates: list[TemplateInfo]) -> Table:
    """Templates and whether they lie over the base one."""
    table = ui.table("NAME", "ON BASE")
    for t in templates:
        table.add_row(t.name, "yes" if t.on_base else "no")
    return table


@app.command("ls")
def template_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List the templates sandboxes can be created from."""
    with connect(url, api_key) as client:
        templates = client.templates.list()
    ui.show(templates, as_json, _template_table)


@app.command("import")
def template_import(
    name: Annotated[str, typer.Argument(help="Template name (lowercase letters, digits, . _ -).")],
    archive: Annotated[
        Path, typer.Argument(help="A rootfs tarball (.tar, .tar.gz, .tar.xz).", exists=True, dir_okay=False)
    ],
    on_base: Annotated[bool, typer.Option("--on-base", help="Lay the files over the base template.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Import a rootfs tarball as a template (admin key)."""
    size = archive.stat().st_size
    with connect(url, api_key) as client, archive.open("rb") as f, ui.transfer(f"import {archive.name}", size) as sent:
        info = client.templates.import_tar(name, f, on_base=on_base, on_progress=sent)
    ui.out.print(info.name, highlight=False)


@app.command("rm")
def template_rm(name: Annotated[str, typer.Argument(help="Template name.")], url: UrlOpt = None,
                api_key: KeyOpt = None) -> None:  # fmt: skip
    """Delete a template (refused while sandboxes use it)."""
    with connect(url, api_key) as client:
        client.templates.delete(name)
    ui.err.print(f"deleted template {name}", highlight=False)
