"""How the ingress refuses a request: with the API's own JSON error bodies.

Ingress runs ahead of routing, so nothing catches its errors for it; every refusal
(bad port, no credentials, port closed, no valid answer) is built and sent from here,
for plain HTTP and for WebSockets alike.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Scope, Send

from cloche.control.errors import ApiError
from cloche.server.ingress.targets import Target


async def reject(scope: Scope, send: Send, exc: Exception) -> None:
    """Answer with the app's own handler for `exc` (the API's JSON error bodies)."""
    handlers = getattr(scope["app"], "exception_handlers", {})
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    response: Response = await handler(HTTPConnection(scope), exc)
    await send_response(scope, send, response)


async def send_response(scope: Scope, send: Send, response: Response) -> None:
    """Send `response`; a WebSocket that cannot carry an HTTP answer is closed (403)."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        return

    async def no_receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)


def unauthorized(target: Target) -> ApiError:
    also = ", or the owner's API key (Authorization: Bearer)" if target.by_path else ""
    return ApiError(401, "unauthorized", f"port {target.port} of sandbox {target.sandbox_id} needs its traffic token "
                                         f"(header e2b-traffic-access-token or X-Cloche-Traffic-Token), "
                                         f"a signed URL{also}")  # fmt: skip


def port_closed(target: Target) -> ApiError:
    message = f"nothing listens on port {target.port} in sandbox {target.sandbox_id} (listen on 0.0.0.0)"
    return ApiError(502, "port_closed", message)


def connect_error(target: Target, exc: BaseException) -> ApiError:
    if isinstance(exc, ConnectionRefusedError):
        return port_closed(target)
    return ApiError(502, "bad_gateway", f"port {target.port} of sandbox {target.sandbox_id} cannot be reached: "
                                        f"{exc.__class__.__name__}: {exc}")  # fmt: skip


def no_answer(target: Target) -> ApiError:
    return ApiError(502, "bad_gateway", f"port {target.port} of sandbox {target.sandbox_id} "
                                        "closed the connection without a valid HTTP answer")  # fmt: skip
