"""``cloche port``: the URL where a port of a sandbox is reachable from outside, on
stdout for ``$(cloche port ID 8000)``, with how to send the traffic token on stderr."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from cloche.cli import ui
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect, handle
from cloche.client.models import PortUrls

app = typer.Typer()


@app.command("port", epilog='Example: curl -H "X-Cloche-Traffic-Token: $TOKEN" $(cloche port ID 8000)')
def port_url(
    sandbox_id: SandboxId,
    port: Annotated[
        int, typer.Argument(min=1, max=65535, help="Port a server in the sandbox listens on.", show_default=False)
    ],
    signed: Annotated[
        bool, typer.Option("--signed", help="Print a signed URL that needs no token until it expires.")
    ] = False,
    expires: Annotated[int, typer.Option("--expires", min=1, help="Lifetime of the signed URL in seconds.")] = 3600,
    path_form: Annotated[
        bool,
        typer.Option("--path", help="Print the URL under the API server's path instead of the {port}-{id} host."),
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print the URL where a port of a sandbox is reachable from outside.

    The URL goes to stdout; how to send the traffic token (unless the sandbox is public
    or the URL is signed) goes to stderr.
    """
    with connect(url, api_key) as client:
        urls = handle(client, sandbox_id).port_urls(port, expires_s=expires)
    if as_json:
        ui.print_json(urls)
        return
    link = _port_link(urls, signed, path_form)
    ui.out.print(link, highlight=False, markup=False, soft_wrap=True)
    if signed and urls.signed_url:
        ui.err.print(f"signed, valid for {expires}s; no token needed", highlight=False)
    elif urls.public or not urls.token:
        ui.err.print("public: no token needed", highlight=False)
    else:
        ui.err.print(f"curl -H 'X-Cloche-Traffic-Token: {urls.token}' {shlex.quote(link)}",
                     highlight=False, markup=False, soft_wrap=True)  # fmt: skip


def _port_link(urls: PortUrls, signed: bool, path_form: bool) -> str:
    if signed and urls.signed_url:
        return urls.signed_url
    if path_form and urls.path_url:
        return urls.path_url
    return urls.url
