"""``cloche tenant`` (admin key): create and list tenants with their quotas, and issue
and revoke their API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, UrlOpt, connect
from cloche.client.models import Tenant

app = typer.Typer(help="Manage tenants and their API keys (admin key required).", no_args_is_help=True)


@app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="Tenant name (letters, digits, . _ : -).", show_default=False)],
    max_sandboxes: Annotated[int | None, typer.Option(help="Most sandboxes at once.")] = None,
    max_cpu: Annotated[float | None, typer.Option(help="Most CPU cores across sandboxes.")] = None,
    max_memory_mb: Annotated[int | None, typer.Option(help="Most memory (MiB) across sandboxes.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a tenant and print its id and first API key (shown only once)."""
    with connect(url, api_key) as client:
        tenant = client.tenants.create(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
    if as_json:
        ui.print_json(tenant)
        return
    ui.out.print(f"id:      {tenant.id}", highlight=False)
    ui.out.print(f"api_key: {tenant.api_key}", highlight=False)
    ui.err.print("[dim]store the key now: it cannot be shown again[/]")


def _tenant_table(tenants: list[Tenant]) -> Table:
    """Tenants and their quotas."""
    table = ui.table("ID", "NAME", "MAX SANDBOXES", "MAX CPU", "MAX MEMORY", "CREATED")
    for t in tenants:
        table.add_row(
            t.id,
            t.name,
            str(t.max_sandboxes) if t.max_sandboxes is not None else "-",
            ui.cores(t.max_cpu),
            ui.mib(t.max_memory_mb),
            ui.when(t.created_at),
        )
    return table


@app.command("ls")
def tenant_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List tenants and their quotas."""
    with connect(url, api_key) as client:
        tenants = client.tenants.list()
    ui.show(tenants, as_json, _tenant_table)


@app.command("add-key")
def tenant_add_key(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Issue another API key for a tenant."""
    with connect(url, api_key) as client:
        key = client.tenants.create_key(tenant_id)
    ui.out.print(f"key_id:  {key.id}", highlight=False)
    ui.out.print(f"api_key: {key.api_key}", highlight=False)


@app.command("revoke-key")
def tenant_revoke_key(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.", show_default=False)],
    key_id: Annotated[str, typer.Argument(help="Key id (from add-key).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Revoke an API key; it stops working immediately."""
    with connect(url, api_key) as client:
        client.tenants.revoke_key(tenant_id, key_id)
    ui.err.print(f"revoked {key_id}", highlight=False)
