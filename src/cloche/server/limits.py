"""Request-size limits as pure ASGI middleware: the limit is enforced while the body
streams in (chunked uploads included), so an oversized request never sits in memory."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloche.config import Settings
from cloche.server.errors import error_body


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request to `path` may send."""
    if path.endswith("/archive") or path.startswith("/v1/templates/"):
        return settings.max_archive_bytes
    if path.endswith("/files") or "/invoke" in path or path.startswith("/process.Process/"):
        return settings.max_file_bytes
    return settings.max_json_bytes


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.settings, scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _reject(send, limit)
                return
        seen = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            # Past the limit we answer 413 ourselves, then tell the app the client left,
            # so it stops reading whatever it was doing (its own answer is dropped).
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not started:
                        await _reject(send, limit)
                    rejected = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(error_body("too_large", f"request body exceeds {limit} bytes")).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close"), (b"x-cloche-error", b"too_large")]  # fmt: skip
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
