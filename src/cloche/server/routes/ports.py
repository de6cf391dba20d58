"""Exposed ports: the URLs and credentials that reach a port of a sandbox, and the path
form of ingress.

The proxying is `cloche.server.ingress`. Its middleware answers both forms before
routing (so proxied bodies skip the API's body limits and routing costs nothing); the
path-form routes here put it in the API's documentation and serve it the same way
should a request get this far. `install` adds the routes and the middleware together.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from cloche.config import Settings
from cloche.constants import MAX_SIGNED_URL_S
from cloche.control.errors import ApiError
from cloche.server import ingress
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx

router = APIRouter(prefix="/v1/sandboxes", tags=["ports"])
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def install(app: FastAPI, settings: Settings) -> None:
    """The routes and the ingress middleware. Call after every other middleware: the
    last one added runs first, and ingress must see requests before anything else."""
    app.include_router(router)
    app.add_middleware(ingress.Ingress, settings=settings)


class PortUrls(BaseModel):
    port: int
    url: str = Field(..., description="by host name: {scheme}://{port}-{id}.{ingress_domain}[:port]/")
    path_url: str = Field(..., description="by path, on the API's own host: .../v1/sandboxes/{id}/ports/{port}/")
    token: str | None = Field(..., description="the traffic token (header e2b-traffic-access-token or "
                                               "X-Cloche-Traffic-Token); null when the sandbox is public")  # fmt: skip
    signed_url: str = Field(..., description="`url` with a signature valid until expires_at (for browsers: "
                                             "the first load sets a cookie for the rest)")  # fmt: skip
    expires_at: int = Field(..., description="when signed_url stops working (unix seconds)")
    public: bool = Field(..., description="reachable without credentials (the network policy's `public`)")


def _host_port(host: str) -> str:
    """':8787' from 'localhost:8787', '' when the Host carries no port."""
    _, colon, port = host.rpartition(":")
    return f":{port}" if colon and port.isdigit() and not host.endswith("]") else ""


@router.get("/{sandbox_id}/urls/{port}", response_model=PortUrls)
async def port_urls(sandbox_id: str, port: int, request: Request, tenant: CurrentTenant,
                    expires_s: Annotated[int, Query(ge=1, le=MAX_SIGNED_URL_S)] = 3600) -> PortUrls:  # fmt: skip
    """Where a port of the sandbox is reached, with the credentials to use. Any process
    in the sandbox listening on 0.0.0.0:PORT answers there; a sleeping sandbox wakes."""
    c = ctx(request)
    view = c.sandboxes.get(tenant, sandbox_id)
    if not 1 <= port <= 65535:
        raise ApiError(400, "invalid_request", "the port must be a number from 1 to 65535")
    tokens = ingress.tokens_of(request.app)
    public = view.record.spec.network.public
    scheme = request.url.scheme
    host = request.headers.get("host") or f"{c.settings.host}:{c.settings.port}"
    domain = c.settings.ingress_domain.strip(".")
    url = f"{scheme}://{port}-{sandbox_id}.{domain}{_host_port(host)}/"
    expires_at = int(time.time()) + expires_s
    signature = tokens.sign(sandbox_id, port, expires_at)
    return PortUrls(
        port=port,
        url=url,
        path_url=f"{scheme}://{host}/v1/sandboxes/{sandbox_id}/ports/{port}/",
        token=None if public else tokens.token(sandbox_id),
        signed_url=f"{url}?{ingress.SIGNED_PARAM.decode()}={signature}&{ingress.EXPIRES_PARAM.decode()}={expires_at}",
        expires_at=expires_at,
        public=public,
    )


class _Proxied(Response):
    """A response that is the proxied exchange itself."""

    def __init__(self, target: ingress.Target) -> None:
        super().__init__()
        self.target = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await ingress.proxy_of(scope["app"]).serve(scope, receive, send, self.target)


def _target(scope: Scope) -> ingress.Target:
    target = ingress.match_path(scope)
    assert target is not None  # the route's path is the form match_path reads
    return target


@router.api_route("/{sandbox_id}/ports/{port}", methods=METHODS, include_in_schema=False)
@router.api_route("/{sandbox_id}/ports/{port}/{path:path}", methods=METHODS, response_class=Response,
                  summary="Reach a port of the sandbox (any method; WebSockets too)")  # fmt: skip
async def port_by_path(sandbox_id: str, port: str, request: Request, path: str = "") -> Response:
    """Proxied to `path` on the sandbox's port, query included, bodies streamed. Needs
    the owner's API key, the traffic token (header e2b-traffic-access-token or
    X-Cloche-Traffic-Token) or a signed URL, unless the sandbox is public. 502 with
    `port_closed` when nothing listens there."""
    return _Proxied(_target(request.scope))


@router.websocket("/{sandbox_id}/ports/{port}")
@router.websocket("/{sandbox_id}/ports/{port}/{path:path}")
async def port_by_path_ws(websocket: WebSocket) -> None:
    await ingress.proxy_of(websocket.app).serve(websocket.scope, websocket.receive, websocket.send,
                                                _target(websocket.scope))  # fmt: skip
