"""The node API's WebSockets: interactive exec, byte streams to a sandbox's port or
host socket (ingress), and the node's event stream (sandbox started, stopped, expired,
and every change of a record, which a `RemoteNode` turns back into its local records
and its `SandboxEvents` callbacks).

Framing, both ways: binary messages carry bytes (stdout/stderr prefixed with b"O"/b"E";
stdin; port bytes), text messages carry JSON control (the first answer is {"ok": true}
or {"error": ...}; then exec events, stdin close, signals, resizes, "eof").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from cloche.node.api import CHUNK
from cloche.node.errors import RuntimeFailure
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime
from cloche.nodeapi import wire
from cloche.nodeapi.tasks import EOF_MESSAGE, HalfClose, race

WATCH_S = 0.2  # how often records are compared for changes the events did not announce
QUEUE = 10_000  # events a slow watcher may lag behind before it is dropped (it re-syncs)
OUT, ERR = b"O", b"E"


async def refuse(ws: WebSocket, exc: Exception) -> None:
    """Answer a stream that could not be opened with the error, then close."""
    if isinstance(exc, RuntimeFailure):
        await ws.send_json({"error": wire.error_body(exc)})
    else:
        assert isinstance(exc, OSError)
        await ws.send_json({"oserror": exc.errno or 0, "message": str(exc)})
    await ws.close()


async def disconnected(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


class EventHub:
    """The runtime's events fanned out to every connected watcher, each of which gets
    a snapshot of all records first, then every change in order."""

    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        rt.subscribe(self)
        rt.on_expire(lambda sandbox_id: self._send({"type": "expired", "id": sandbox_id}))

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        for q in list(self._queues):
            self._drop(q)

    async def sandbox_started(self, record: SandboxRecord) -> None:
        self._send({"type": "started", "record": wire.dump(record)})

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        self._send({"type": "stopped", "id": sandbox_id})

    def _drop(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        """End a watcher's stream (it reconnects and gets a fresh snapshot)."""
        self._queues.discard(q)
        with contextlib.suppress(asyncio.QueueEmpty):
            if q.full():
                q.get_nowait()
        q.put_nowait(None)

    def _send(self, event: dict[str, Any]) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(q)

    def _versions(self) -> dict[str, tuple[Any, ...]]:
        return {r.id: (r.updated_at, r.state, r.expires_at, r.last_active_at) for r in self.rt.all_records()}

    async def _watch(self) -> None:
        seen = self._versions()
        while True:
            await asyncio.sleep(WATCH_S)
            now = self._versions()
            for sandbox_id, version in now.items():
                if seen.get(sandbox_id) != version:
                    self._send({"type": "record", "record": wire.dump(self.rt.get(sandbox_id))})
            for sandbox_id in seen.keys() - now.keys():
                self._send({"type": "gone", "id": sandbox_id})
            seen = now

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        q.put_nowait({"type": "snapshot", "records": [wire.dump(r) for r in self.rt.all_records()]})
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(q)


def routes(rt: NodeRuntime, hub: EventHub) -> list[BaseRoute]:
    async def events(ws: WebSocket) -> None:
        await ws.accept()
        q = hub.subscribe()

        async def forward() -> None:
            while (event := await q.get()) is not None:
                await ws.send_json(event)
            await ws.close(1013)  # dropped: try again

        try:
            await race(forward(), disconnected(ws))
        finally:
            hub.unsubscribe(q)

    async def exec_(ws: WebSocket) -> None:
        await ws.accept()
        try:
            request = wire.load(ExecRequest, json.loads(await ws.receive_text()))
            stream = await rt.open_exec(ws.path_params["id"], request)
        except RuntimeFailure as exc:
            await refuse(ws, exc)
            return
        await ws.send_json({"ok": True})

        async def output() -> None:
            try:
                async for ev in stream.events():
                    if ev.kind in ("stdout", "stderr"):
                        await ws.send_bytes((OUT if ev.kind == "stdout" else ERR) + ev.data)
                    else:
                        await ws.send_json({"event": wire.dump(ev)})
            except RuntimeFailure as exc:
                await ws.send_json({"error": wire.error_body(exc)})
            await ws.close()

        async def control() -> None:
            while (msg := await ws.receive())["type"] != "websocket.disconnect":
                if msg.get("bytes") is not None:
                    await stream.write_stdin(msg["bytes"])
                    continue
                op = json.loads(msg["text"])
                if op["op"] == "close_stdin":
                    await stream.close_stdin()
                elif op["op"] == "signal":
                    await stream.signal(op["signo"])
                elif op["op"] == "resize":
                    await stream.resize(op["rows"], op["cols"])
                else:
                    return

        try:
            await race(output(), control())
        finally:
            await stream.close()

    async def connect(ws: WebSocket) -> None:
        await ws.accept()
        sandbox_id, q = ws.path_params["id"], ws.query_params
        try:
            if "port" in q:
                reader, writer = await rt.connect(sandbox_id, int(q["port"]))
            else:
                reader, writer = await rt.connect_host(sandbox_id, q["name"])
        except (RuntimeFailure, OSError) as exc:
            await refuse(ws, exc)
            return
        await ws.send_json({"ok": True})

        half = HalfClose()

        async def down() -> None:
            while data := await reader.read(CHUNK):
                await ws.send_bytes(data)
            await ws.send_text(EOF_MESSAGE)
            await half.sent()

        async def up() -> None:
            while (msg := await ws.receive())["type"] != "websocket.disconnect":
                if msg.get("bytes") is not None:
                    writer.write(msg["bytes"])
                    await writer.drain()
                else:
                    if writer.can_write_eof():
                        writer.write_eof()
                    await half.got()
                    return

        try:
            await race(down(), up())
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await ws.close()

    async def watch(ws: WebSocket) -> None:
        await ws.accept()
        q = ws.query_params
        try:
            changes = await rt.files(ws.path_params["id"]).watch(q["path"], q.get("recursive") == "1")
        except RuntimeFailure as exc:
            await refuse(ws, exc)
            return
        await ws.send_json({"ok": True})  # armed: every change from now on is reported

        async def forward() -> None:
            try:
                async for change in changes:
                    await ws.send_json({"event": wire.dump(change)})
            except RuntimeFailure as exc:
                await ws.send_json({"error": wire.error_body(exc)})
            await ws.close()

        await race(forward(), disconnected(ws))

    return [
        WebSocketRoute("/v1/events", events),
        WebSocketRoute("/v1/sandboxes/{id}/files/watch", watch),
        WebSocketRoute("/v1/sandboxes/{id}/exec/stream", exec_),
        WebSocketRoute("/v1/sandboxes/{id}/connect", connect),
    ]
