"""ASGI middleware: where each request's user is, and the `cloche-region` it was served in.

Why it exists: latency-aware placement (fleet/geo.py) needs the user's region on every
create and wake, and a client wants to see where its request ran. Before the request
goes in, the user's region is resolved once (fleet/where.py: the `cloche-region` hint
header, the client address in `Settings.client_regions`, else this replica's
`Settings.region`) and kept for the request; a hint no one knows is answered 400. On the
way out, a response that reached a sandbox carries `cloche-region: <its node's region>`
(in a cluster the fleet records it; the embedded server's one node is in
`Settings.region`, "local" when unset, and every answer says so).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloche.config import Settings
from cloche.fleet import where
from cloche.fleet.scoring import fleet_matrix
from cloche.server.errors import error_response


class RegionMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.clients = where.ClientRegions(settings.client_regions)

    def known(self, scope: Scope) -> set[str]:
        """The regions a hint may name: the live nodes', the latency matrix's, the map's,
        and this replica's."""
        s = self.settings
        known = self.clients.regions | fleet_matrix(s.latency_matrix).regions | {s.region, s.node_region} - {""}
        context = getattr(scope["app"].state, "ctx", None)
        if context is not None and context.fleet is not None:
            known |= context.fleet.regions()
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hint = next((v.decode("latin-1") for k, v in scope["headers"] if k == where.HEADER.encode()), None)
        client = scope["client"][0] if scope.get("client") else None
        try:
            known = self.known(scope) if hint else set()
            user = where.locate_user(hint, client, self.clients, self.settings.region, known)
        except where.UnknownRegion as e:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await error_response(400, "unknown_region", str(e))(scope, receive, send)
            return
        embedded = not self.settings.etcd
        served = where.Where(user, (self.settings.region or "local") if embedded else None)

        async def send_region(message: Message) -> None:
            if message["type"] == "http.response.start" and served.served:
                message["headers"] = [*message.get("headers", []), (where.HEADER.encode(), served.served.encode())]
            await send(message)

        with where.enter(served):
            await self.app(scope, receive, send_region)
