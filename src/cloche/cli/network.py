"""``cloche network``: show and replace a sandbox's network policy (the flags and the
view of a policy are in :mod:`cloche.cli.netpolicy`, shared with ``sandbox create``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cloche.cli import netpolicy, ui
from cloche.cli.netpolicy import AllowOutOpt, DenyOutOpt, PublicOpt
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect, handle

app = typer.Typer(
    help="Show and change a sandbox's network policy (what it may reach), address and counters.",
    no_args_is_help=True,
)


@app.command("show")
def network_show(sandbox_id: SandboxId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show a sandbox's network policy, address and traffic and DNS counters."""
    with connect(url, api_key) as client:
        status = handle(client, sandbox_id).network()
    ui.show(status, as_json, netpolicy.network_detail)


@app.command(
    "set",
    epilog="Examples: cloche network set ID --none; cloche network set ID --allow-out pypi.org "
    "--allow-out '*.pythonhosted.org'; cloche network set ID --policy @policy.json",
)
def network_set(
    sandbox_id: SandboxId,
    none: Annotated[bool, typer.Option("--none", help="No network at all (loopback only).")] = False,
    internet: Annotated[bool, typer.Option("--internet", help="The open internet (no rules).")] = False,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="The whole policy: @policy.json (@- for stdin) or inline JSON."),
    ] = None,
    allow_out: AllowOutOpt = None,
    deny_out: DenyOutOpt = None,
    public: PublicOpt = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Replace a sandbox's network policy; it is in force at once.

    Open connections the new policy denies are cut; nothing of the old policy is kept.
    --allow-out, --deny-out and --public build a policy over the open internet (or add
    to --policy). With --allow-out alone, only what it names is reachable.
    """
    modes = [flag for flag, given in (("--none", none), ("--internet", internet), ("--policy", policy is not None))
             if given]  # fmt: skip
    if len(modes) > 1:
        raise typer.BadParameter(f"{' and '.join(modes)} cannot be combined", param_hint=modes[0])
    if not modes and not (allow_out or deny_out or public):
        raise typer.BadParameter("give --none, --internet, --policy or rules (--allow-out, --deny-out, --public)")
    base = "none" if none else "internet" if internet else netpolicy.parse_network(policy, "--policy")
    spec = netpolicy.network_spec(base, allow_out, deny_out, public, modes[0] if modes else "--allow-out")
    assert spec is not None
    with connect(url, api_key) as client:
        status = handle(client, sandbox_id).set_network(spec)
    ui.show(status, as_json, netpolicy.network_detail)
