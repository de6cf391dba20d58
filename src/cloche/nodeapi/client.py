"""`RemoteNode`: the `Node` interface (node/api.py) of a node on another machine, over
its node API (HTTPS with the cluster CA, a bearer credential per node).

Records are read locally, as the interface promises: the client follows the node's
event stream (a snapshot of every record, then each change) and keeps its own copy,
which each call that returns a record also refreshes. Sync reads that must ask the
node (usage, pool, templates...) use a blocking HTTP client; everything else is async.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from cloche.node.api import (
    CHUNK,
    DiskUsage,
    ExecStream,
    ExpireCallback,
    PoolStatus,
    SandboxEvents,
    SandboxFiles,
    TemplateInfo,
)
from cloche.node.cgroups import Usage
from cloche.node.errors import InvalidState, NodeUnreachable, SandboxNotFound
from cloche.node.net.firewall import Counters
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.spec import Limits, SandboxSpec
from cloche.node.supervisor import ExecResult
from cloche.nodeapi import tls, wire
from cloche.nodeapi.http import NodeHttp
from cloche.nodeapi.remote_streams import RemoteExecStream, RemoteFiles, answer, bridge, opened
from cloche.snapshots.gc import GcReport

log = logging.getLogger("cloche.nodeapi")
TIMEOUT = httpx.Timeout(600.0, connect=10.0)  # hibernating a big sandbox takes a while
# The sync calls (usage, counters, pool, templates) are quick reads made on the server's
# event loop: a node cut off without a reset (a partition drops packets) must not hold
# that loop, and the replica's own etcd lease with it, for longer than this.
SYNC_TIMEOUT = httpx.Timeout(2.0)
RECONNECT_S = 0.5
TOUCH_EVERY_S = 1.0


class RemoteNode:
    """A node reached over its node API. `await start()` before use, `close()` after."""

    def __init__(self, url: str, credential: str, ca_file: Path) -> None:
        self.url = url.rstrip("/")
        ssl = tls.client_context(ca_file)
        self._ssl = ssl
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._http = NodeHttp(self.url, ssl, self._headers)
        self._sync = httpx.Client(base_url=self.url, verify=ssl, headers=self._headers, timeout=SYNC_TIMEOUT)
        self._records: dict[str, SandboxRecord] = {}
        self._gone: set[str] = set()  # killed ids: a late event must not bring them back
        self._listeners: list[SandboxEvents] = []
        self._expired: list[ExpireCallback] = []
        self._info: dict[str, Any] = {}
        self._synced = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._follower: asyncio.Task[None] | None = None

    # ---- connection ---------------------------------------------------------------------

    async def start(self) -> None:
        """Read the node's identity and follow its events (returns once records are in)."""
        self._info = await self._call("GET", "/v1/info")
        self._follower = asyncio.create_task(self._follow())
        await asyncio.wait_for(self._synced.wait(), 30)

    async def close(self) -> None:
        tasks = [t for t in (self._follower, *self._background) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.close()
        self._sync.close()

    def _ws(self, path: str) -> connect:
        return connect("wss" + self.url.removeprefix("https") + path, ssl=self._ssl, additional_headers=self._headers,
                       max_size=2 * CHUNK, compression=None)  # fmt: skip

    async def _follow(self) -> None:
        while True:
            try:
                async with self._ws("/v1/events") as ws:
                    async for raw in ws:
                        await self._apply(json.loads(raw))
            except (OSError, WebSocketException) as exc:
                log.warning("node %s: event stream broken (%s); reconnecting", self.url, exc)
            await asyncio.sleep(RECONNECT_S)

    async def _apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "snapshot":
            self._records = {r.id: r for r in (wire.load(SandboxRecord, d) for d in event["records"])}
            self._synced.set()
        elif kind in ("record", "started"):
            rec = self._keep(wire.load(SandboxRecord, event["record"]))
            if kind == "started":
                for listener in self._listeners:
                    await self._tell(listener.sandbox_started(rec))
        elif kind == "gone":
            self._forget(event["id"])
        elif kind == "stopped":
            for listener in self._listeners:
                await self._tell(listener.sandbox_stopped(event["id"]))
        elif kind == "expired":
            for callback in self._expired:
                callback(event["id"])

    @staticmethod
    async def _tell(call: Any) -> None:
        try:
            await call
        except Exception:
            log.exception("a sandbox event listener failed")

    def _keep(self, rec: SandboxRecord) -> SandboxRecord:
        """Remember `rec` unless what we hold is newer (events and answers race)."""
        held = self._records.get(rec.id)
        if rec.id not in self._gone and (held is None or rec.updated_at >= held.updated_at):
            self._records[rec.id] = rec
        return rec

    def _forget(self, sandbox_id: str) -> None:
        self._gone.add(sandbox_id)
        self._records.pop(sandbox_id, None)

    async def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return answer(await self._http.request(method, path, json=body, params=params))

    def _call_sync(self, method: str, path: str, body: Any = None, *, timeout: httpx.Timeout = SYNC_TIMEOUT,
                   **params: Any) -> Any:  # fmt: skip
        try:
            return answer(self._sync.request(method, path, json=body, params=params or None, timeout=timeout))
        except httpx.TransportError as exc:
            raise NodeUnreachable(f"node {self.url} unreachable: {exc}") from exc

    async def _record(self, path: str, body: Any = None) -> SandboxRecord:
        return self._keep(wire.load(SandboxRecord, await self._call("POST", path, body)))

    # ---- identity and records -----------------------------------------------------------

    @property
    def key(self) -> str:
        return str(self._info["key"])

    @property
    def default_isolation(self) -> str:
        return str(self._info["default_isolation"])

    @property
    def networking(self) -> bool:
        return bool(self._info["networking"])

    def capacity(self) -> dict[str, float]:
        return dict(self._info["capacity"])

    def get(self, sandbox_id: str) -> SandboxRecord:
        try:
            return self._records[sandbox_id]
        except KeyError:
            raise SandboxNotFound(f"sandbox {sandbox_id} not found") from None

    async def current(self, sandbox_id: str) -> SandboxRecord:
        return self._keep(wire.load(SandboxRecord, await self._call("GET", f"/v1/sandboxes/{sandbox_id}")))

    def has(self, sandbox_id: str) -> bool:
        """Whether the node holds the sandbox, as its events last said."""
        return sandbox_id in self._records

    def fetch(self, sandbox_id: str) -> bool:
        """Ask the node for a record its events have not brought yet (one another server
        just made there); whether it holds the sandbox. Blocking: for the rare miss only."""
        if sandbox_id in self._gone:
            return False
        try:
            self._keep(wire.load(SandboxRecord, self._call_sync("GET", f"/v1/sandboxes/{sandbox_id}")))
        except (SandboxNotFound, NodeUnreachable):  # not there, or the node does not answer: not held, as we know
            return False
        return True

    def list(self) -> list[SandboxRecord]:
        return [r for r in self._records.values() if not r.pooled]

    def all_records(self) -> list[SandboxRecord]:
        return list(self._records.values())

    def subscribe(self, listener: SandboxEvents) -> None:
        self._listeners.append(listener)

    def on_expire(self, callback: ExpireCallback) -> None:
        self._expired.append(callback)

    # ---- lifecycle ----------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, *, use_pool: bool = True,
                     snapshot: str | None = None) -> SandboxRecord:  # fmt: skip
        body = {"spec": wire.dump(spec), "use_pool": use_pool, "snapshot": snapshot}
        return self._keep(wire.load(SandboxRecord, await self._call("POST", "/v1/sandboxes", body)))

    async def adopt(self, lost: SandboxRecord, snapshot: str | None) -> SandboxRecord:
        self._gone.discard(lost.id)
        return await self._record("/v1/adopt", {"record": wire.dump(lost), "snapshot": snapshot})

    async def kill(self, sandbox_id: str) -> None:
        await self._call("DELETE", f"/v1/sandboxes/{sandbox_id}")
        self._forget(sandbox_id)

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/stop")

    async def start_sandbox(self, sandbox_id: str) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/start")

    async def wake(self, sandbox_id: str) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/wake")

    def touch(self, sandbox_id: str) -> None:
        """Tell the node of activity, at most once a second per sandbox: the idle policy
        counts in seconds, and an exec or file call marks the sandbox active on the node anyway."""
        rec = self.get(sandbox_id)
        now = time.time()
        if now - rec.last_active_at < TOUCH_EVERY_S:
            return
        rec.last_active_at = now
        task = asyncio.get_running_loop().create_task(self._call("POST", f"/v1/sandboxes/{sandbox_id}/touch"))
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception():
            log.warning("touch on node %s failed: %s", self.url, task.exception())

    async def hibernate(self, sandbox_id: str, keep_local: bool = True) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/hibernate", {"keep_local": keep_local})

    async def snapshot(self, sandbox_id: str) -> str:
        return str((await self._call("POST", f"/v1/sandboxes/{sandbox_id}/snapshot"))["manifest"])

    def snapshot_bytes(self, manifest: str) -> int:
        return int(self._call_sync("GET", f"/v1/snapshots/{manifest}/bytes")["bytes"])

    async def fork(self, sandbox_id: str, spec: SandboxSpec | None = None) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/fork", {"spec": wire.dump(spec) if spec else None})

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/pause")

    async def resume(self, sandbox_id: str) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/resume")

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/network", {"policy": wire.dump(policy)})

    async def check_network(self, policy: NetworkPolicy) -> None:
        await self._call("POST", "/v1/network/check", {"policy": wire.dump(policy)})

    async def set_timeout(self, sandbox_id: str, timeout_s: float | None) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/timeout", {"timeout_s": timeout_s})

    async def set_env(self, sandbox_id: str, env: dict[str, str]) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/env", {"env": env})

    async def resize(self, sandbox_id: str, limits: Limits) -> SandboxRecord:
        return await self._record(f"/v1/sandboxes/{sandbox_id}/resize", {"limits": wire.dump(limits)})

    # ---- capacity and usage -------------------------------------------------------------

    def usage(self, sandbox_id: str) -> Usage:
        return wire.load(Usage, self._call_sync("GET", f"/v1/sandboxes/{sandbox_id}/usage"))

    def disk_usage(self, sandbox_id: str) -> DiskUsage:
        return wire.load(DiskUsage, self._call_sync("GET", f"/v1/sandboxes/{sandbox_id}/disk"))

    def pool_status(self) -> PoolStatus:
        return wire.load(PoolStatus, self._call_sync("GET", "/v1/pool"))

    def set_pool_size(self, size: int) -> None:
        self._call_sync("PUT", "/v1/pool", {"size": size})

    def network_counters(self) -> dict[str, Counters]:
        return {k: wire.load(Counters, v) for k, v in self._call_sync("GET", "/v1/network/counters").items()}

    def network_stats(self, sandbox_id: str) -> dict[str, int] | None:
        stats = self._call_sync("GET", f"/v1/sandboxes/{sandbox_id}/network-stats")
        return None if stats is None else dict(stats)

    # ---- templates and garbage ----------------------------------------------------------

    def template_names(self) -> list[str]:
        return list(self._call_sync("GET", "/v1/templates"))

    def template(self, name: str) -> TemplateInfo:
        return wire.load(TemplateInfo, self._call_sync("GET", f"/v1/templates/{name}"))

    async def import_template(self, name: str, tarball: AsyncIterable[bytes], on_base: bool = False) -> TemplateInfo:
        r = await self._http.request("PUT", f"/v1/templates/{name}", params={"on_base": "1" if on_base else "0"},
                                     content=tarball)  # fmt: skip
        return wire.load(TemplateInfo, answer(r))

    def delete_template(self, name: str) -> None:
        self._call_sync("DELETE", f"/v1/templates/{name}")

    def collect_garbage(self, grace_s: float = 300.0) -> GcReport:
        return wire.load(GcReport, self._call_sync("POST", "/v1/gc", {"grace_s": grace_s}, timeout=TIMEOUT))

    # ---- files, exec, ingress -----------------------------------------------------------

    def files(self, sandbox_id: str) -> SandboxFiles:
        rec = self.get(sandbox_id)
        if rec.state not in ("running", "paused"):
            raise InvalidState(f"sandbox {sandbox_id} is {rec.state}; start it to use its files")
        return RemoteFiles(self._http, sandbox_id, self._open)

    async def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        data = await self._call("POST", f"/v1/sandboxes/{sandbox_id}/exec", {"request": wire.dump(request)})
        return wire.load(ExecResult, data)

    async def _open(self, path: str, first: str | None = None) -> ClientConnection:
        """A node WebSocket that accepted what was asked (else its error is raised)."""
        try:
            ws = await self._ws(path)
        except (OSError, WebSocketException) as exc:
            raise NodeUnreachable(f"node {self.url} unreachable: {exc}") from exc
        try:
            if first is not None:
                await ws.send(first)
            await opened(ws)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def open_exec(self, sandbox_id: str, request: ExecRequest) -> ExecStream:
        ws = await self._open(f"/v1/sandboxes/{sandbox_id}/exec/stream", json.dumps(wire.dump(request)))
        return RemoteExecStream(ws)

    async def signal(self, sandbox_id: str, pid: int, signo: int) -> int:
        answered = await self._call("POST", f"/v1/sandboxes/{sandbox_id}/signal", {"pid": pid, "signo": signo})
        return int(answered["errno"])

    async def _bridged(self, path: str, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer, task = await bridge(await self._open(path), limit)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return reader, writer

    async def connect(self, sandbox_id: str, port: int,
                      limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        return await self._bridged(f"/v1/sandboxes/{sandbox_id}/connect?port={port}", limit)

    async def connect_host(self, sandbox_id: str, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await self._bridged(f"/v1/sandboxes/{sandbox_id}/connect?name={quote(name)}", 1 << 16)

    def host_file_tail(self, sandbox_id: str, name: str, nbytes: int) -> bytes:
        return bytes(self._call_sync("GET", f"/v1/sandboxes/{sandbox_id}/host/{quote(name)}", nbytes=nbytes))

    def remove_host_file(self, sandbox_id: str, name: str) -> None:
        self._call_sync("DELETE", f"/v1/sandboxes/{sandbox_id}/host/{quote(name)}")
