"""The ingress proxy: one request for a sandbox's port, from credentials to relay.

It checks who may pass (credentials), wakes a sleeping sandbox as exec does (control's
`Ports.reach`), rewrites the headers and hands the exchange to the HTTP or WebSocket
relay; traffic counts as activity for the sandbox's idle policy. The middleware that
recognises ingress requests is `middleware.py`.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from cloche.control.errors import ApiError
from cloche.control.traffic import TrafficTokens
from cloche.node.errors import RuntimeFailure
from cloche.server.context import Context
from cloche.server.ingress.activity import Activity
from cloche.server.ingress.credentials import EXPIRES_PARAM, SIGNED_PARAM, Gate, split_query
from cloche.server.ingress.headers import REQUEST_DROP, WEBSOCKET_DROP, upstream_headers
from cloche.server.ingress.http_relay import HttpRelay
from cloche.server.ingress.rejections import reject
from cloche.server.ingress.targets import Target, header
from cloche.server.ingress.websocket_relay import WebSocketRelay
from cloche.snapshots.store import SnapshotCorrupt


class Proxy:
    """The app's proxy (one per app context): its credentials gate and its pool of HTTP connections."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.gate = Gate(TrafficTokens(ctx.settings.data_dir / "traffic-key"), ctx.store)
        self.tokens = self.gate.tokens
        self.http = HttpRelay(ctx.ports)

    async def serve(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        websocket = scope["type"] == "websocket"
        if websocket and (await receive())["type"] != "websocket.connect":
            return
        query, signed = scope["query_string"], {}
        if SIGNED_PARAM in query:
            query, signed = split_query(query, frozenset({SIGNED_PARAM, EXPIRES_PARAM}))
        ports = self.ctx.ports
        try:
            if not target.port:
                raise ApiError(400, "invalid_request", "the port must be a number from 1 to 65535")
            policy = ports.record(target.sandbox_id).spec.network
            access = self.gate.authorize(scope, target, policy.public, signed)
            address, woke = await ports.reach(target.sandbox_id)
        except (ApiError, RuntimeFailure, SnapshotCorrupt) as exc:
            await reject(scope, send, exc)
            return
        if access.strip_key_param:
            query = split_query(query, frozenset({b"token"}))[0]
        path = target.path + b"?" + query if query else target.path
        mask = policy.mask_request_host
        host = mask.replace("${PORT}", str(target.port)).encode() if mask else header(scope["headers"], b"host")
        headers = upstream_headers(scope, target, access, host, WEBSOCKET_DROP if websocket else REQUEST_DROP)
        activity = Activity(ports, target.sandbox_id)
        if websocket:
            relay = WebSocketRelay(target, address, woke, activity, target.port in policy.https_ports)
            await relay.relay(scope, receive, send, path, host, headers, access.cookie)
        else:
            await self.http.forward(scope, receive, send, target, address, woke, path, headers, access.cookie,
                                    activity, policy.https_ports)  # fmt: skip
