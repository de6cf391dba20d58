"""The ASGI middleware that answers ingress requests ahead of routing.

Either form (`{port}-{id}.{ingress_domain}` by host name, `/v1/sandboxes/{id}/ports/
{port}/...` by path) is proxied before the API sees it: proxied bodies must not meet the
API's JSON body limit, and the work per request must stay small. Everything else goes
on to the app. The app's one proxy is made here, on first use.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from cloche.config import Settings
from cloche.control.traffic import TrafficTokens
from cloche.server.access import note
from cloche.server.ingress.proxy import Proxy
from cloche.server.ingress.targets import HOST_TEMPLATE, PATH_TEMPLATE, match_host, match_path


class Ingress:
    """ASGI middleware: ingress requests (either form) are proxied, the rest go on to the app.
    Add it last, so that it runs first."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        domain = settings.ingress_domain.strip(".").lower()
        self.suffix = ("." + domain).encode() if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            target = (match_host(scope, self.suffix) if self.suffix else None) or match_path(scope)
            if target is not None:
                template = PATH_TEMPLATE if target.by_path else HOST_TEMPLATE
                note(scope, path=template, sandbox_id=target.sandbox_id)
                await proxy_of(scope["app"]).serve(scope, receive, send, target)
                return
        await self.app(scope, receive, send)


def proxy_of(app: Any) -> Proxy:
    """The app's proxy (made on first use, once the app's context exists)."""
    state = app.state
    proxy: Proxy | None = getattr(state, "ingress", None)
    if proxy is None or proxy.ctx is not state.ctx:
        proxy = state.ingress = Proxy(state.ctx)
    return proxy


def tokens_of(app: Any) -> TrafficTokens:
    return proxy_of(app).tokens
