"""The state socket inside every sandbox: /.cloche/host/state.sock.

When a sandbox starts serving (created, claimed from the pool, started again, adopted
after a server restart) the runtime tells this listener, which binds a unix socket in
the sandbox's host directory (bound at /.cloche/host inside). Everything that arrives
on it is scoped to the sandbox's tenant and, by default, to the sandbox's own namespace (named after the
sandbox id). The only other namespaces it can name are the tenant's named namespaces
that the tenant granted to this very sandbox (PUT /v1/state/{ns}/grants/{sandbox id});
anything else is refused, so a sandbox can never reach another's state. Namespaces are
reachable over HTTP by the tenant as /v1/state/<name>/... and outlive the sandboxes.

Wire format (both directions): a frame is a u32 big-endian length and that many bytes;
the payload is a list of fields, each a u32 big-endian length and its bytes.

    request:  [op, namespace ("" = this sandbox's), args...]
    response: ["ok", results...] | ["notfound", message] | ["conflict", message, current
              version or ""] | ["error", code, message]

    get    KEY                                   -> ok VERSION VALUE
    put    KEY VALUE IF_MATCH IF_NONE_MATCH TTL  -> ok VERSION      (IF_MATCH "" = none,
                                                                     IF_NONE_MATCH "1"/"0",
                                                                     TTL "" = none)
    del    KEY IF_MATCH                          -> ok "1"|"0"      (existed)
    ls     PREFIX CURSOR LIMIT                   -> ok NEXT_CURSOR (KEY VERSION SIZE)...
    append DATA IDEMPOTENCY_KEY                  -> ok SEQ "1"|"0"  (replayed)
    read   AFTER LIMIT WAIT_S                    -> ok LAST_SEQ (SEQ DATA)...
    trim   UPTO                                  -> ok FIRST_SEQ

In cluster mode every write (put, del, append, trim) carries the sandbox's fencing token
(`fence_of`); a write from a sandbox that has since been claimed again on another node is
answered ["error", "stale_fence", message] and writes nothing.

A connection may carry many requests, one at a time. supervisor/cloche-state.c and
cloche/state/incontainer.py are the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloche.state.engine import Conflict, Fence, StateEngine, StateError

log = logging.getLogger("cloche.state")
SOCKET_NAME = "state.sock"
MAX_CONNECTIONS = 32  # per sandbox
U32 = struct.Struct(">I")
WRITES = frozenset({"put", "del", "append", "trim"})  # the ops that carry the sandbox's fence


def encode(fields: list[bytes]) -> bytes:
    payload = b"".join(U32.pack(len(f)) + f for f in fields)
    return U32.pack(len(payload)) + payload


def decode(payload: bytes) -> list[bytes]:
    fields, i = [], 0
    while i < len(payload):
        if i + 4 > len(payload):
            raise ValueError("truncated field length")
        (n,) = U32.unpack_from(payload, i)
        i += 4
        if i + n > len(payload):
            raise ValueError("truncated field")
        fields.append(payload[i:i + n])  # fmt: skip
        i += n
    return fields


class SandboxStateSockets:
    """A SandboxListener: one unix server per serving sandbox. `fence_of` (cluster mode)
    gives a sandbox's fence at the moment of a write; without it writes are unfenced."""

    def __init__(self, engine: StateEngine, owner: Callable[[str], str | None],
                 fence_of: Callable[[str], Fence | None] | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.owner = owner  # sandbox id -> tenant id (None while the control plane has none)
        self.fence_of = fence_of
        self.servers: dict[str, tuple[asyncio.AbstractServer, Path]] = {}
        self.conns: dict[str, int] = {}
        self.max_frame = engine.limits.max_value_bytes + engine.limits.max_key_bytes + 4096

    async def sandbox_started(self, record: Any, host_dir: Path) -> None:
        sandbox_id = record.id
        await self.sandbox_stopped(sandbox_id)
        path = host_dir / SOCKET_NAME
        # The sandbox's root owns its host directory and may plant anything there (a
        # symlink to a host file, say), so nothing here follows a path in it: the socket
        # is bound and chmod-ed in the (root-only) parent, then renamed into place.
        staging = host_dir.parent / f".{SOCKET_NAME}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        try:
            server = await asyncio.start_unix_server(
                lambda r, w: self._serve(sandbox_id, r, w), path=str(staging), limit=self.max_frame + 16)  # fmt: skip
        except OSError as e:
            log.warning("state socket for %s: %s", sandbox_id, e)
            return
        try:
            os.chmod(staging, 0o666)
            os.rename(staging, path)
        except OSError as e:
            log.warning("state socket for %s: %s", sandbox_id, e)
            server.close()
            with contextlib.suppress(OSError):
                staging.unlink()
            return
        self.servers[sandbox_id] = (server, path)

    async def sandbox_stopped(self, sandbox_id: str) -> None:
        entry = self.servers.pop(sandbox_id, None)
        if entry is None:
            return
        server, path = entry
        server.close()
        with contextlib.suppress(FileNotFoundError, OSError):
            path.unlink()

    async def close(self) -> None:
        for sandbox_id in list(self.servers):
            await self.sandbox_stopped(sandbox_id)

    async def _tenant(self, sandbox_id: str) -> str | None:
        # A new sandbox starts serving a moment before the control plane records its owner.
        for _ in range(60):
            tenant = self.owner(sandbox_id)
            if tenant is not None:
                return tenant
            await asyncio.sleep(0.05)
        return None

    async def _serve(self, sandbox_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.conns.get(sandbox_id, 0) >= MAX_CONNECTIONS:
            writer.close()
            return
        self.conns[sandbox_id] = self.conns.get(sandbox_id, 0) + 1
        try:
            tenant: str | None = None
            while True:
                try:
                    head = await reader.readexactly(4)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                (n,) = U32.unpack(head)
                if n > self.max_frame:
                    msg = f"request frame over {self.max_frame} bytes".encode()
                    writer.write(encode([b"error", b"too_large", msg]))
                    await writer.drain()
                    return
                try:
                    payload = await reader.readexactly(n)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if tenant is None:
                    tenant = await self._tenant(sandbox_id)
                if tenant is None:
                    reply = [b"error", b"unavailable", b"this sandbox has no owner (yet)"]
                else:
                    reply = await self._handle(tenant, sandbox_id, payload)
                writer.write(encode(reply))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.conns[sandbox_id] -= 1
            if not self.conns[sandbox_id]:
                self.conns.pop(sandbox_id, None)
            writer.close()

    async def _handle(self, tenant: str, sandbox_id: str, payload: bytes) -> list[bytes]:
        try:
            fields = decode(payload)
            if len(fields) < 2:
                raise ValueError("a request is [op, namespace, args...]")
            op, ns, args = fields[0].decode(), fields[1].decode(), fields[2:]
            if ns in ("", sandbox_id):
                ns = sandbox_id
            elif not await self.engine.granted(tenant, ns, sandbox_id):
                return [b"error", b"forbidden", f"namespace {ns[:80]!r} is not granted to this sandbox".encode()]
            return await self._op(tenant, ns, op, args, sandbox_id)
        except Conflict as e:
            cur = b"" if e.current_version is None else str(e.current_version).encode()
            return [b"conflict", e.message.encode(), cur]
        except StateError as e:
            return [b"error", e.code.encode(), e.message.encode()]
        except (ValueError, UnicodeDecodeError, IndexError) as e:
            return [b"error", b"bad_request", str(e).encode()]

    async def _op(self, tenant: str, ns: str, op: str, a: list[bytes], sandbox_id: str) -> list[bytes]:
        e = self.engine
        fence = self.fence_of(sandbox_id) if self.fence_of is not None and op in WRITES else None

        def s(i: int) -> str:
            return a[i].decode() if i < len(a) else ""

        def opt_int(i: int) -> int | None:
            return int(s(i)) if s(i) else None

        if op == "get":
            item = await e.kv_get(tenant, ns, s(0))
            if item is None:
                return [b"notfound", f"key {s(0)!r} not found".encode()]
            return [b"ok", str(item.version).encode(), item.value]
        if op == "put":
            ttl = float(s(4)) if s(4) else None
            v = await e.kv_put(tenant, ns, s(0), a[1] if len(a) > 1 else b"", if_match=opt_int(2),
                               if_none_match=s(3) == "1", ttl_s=ttl, fence=fence)  # fmt: skip
            return [b"ok", str(v).encode()]
        if op == "del":
            existed = await e.kv_delete(tenant, ns, s(0), if_match=opt_int(1), fence=fence)
            return [b"ok", b"1" if existed else b"0"]
        if op == "ls":
            page = await e.kv_list(tenant, ns, prefix=s(0), cursor=s(1) or None, limit=opt_int(2) or 1000)
            out = [b"ok", (page.next_cursor or "").encode()]
            for k in page.items:
                out += [k.key.encode(), str(k.version).encode(), str(k.size).encode()]
            return out
        if op == "append":
            r = await e.log_append(tenant, ns, a[0] if a else b"", idempotency_key=s(1) or None, fence=fence)
            return [b"ok", str(r.seq).encode(), b"1" if r.replayed else b"0"]
        if op == "read":
            after, limit = opt_int(0) or 0, opt_int(1) or 100
            wait = float(s(2)) if s(2) else 0.0
            page = await (e.log_wait(tenant, ns, after, wait, limit) if wait > 0
                          else e.log_read(tenant, ns, after, limit))  # fmt: skip
            out = [b"ok", str(page.last_seq).encode()]
            for entry in page.items:
                out += [str(entry.seq).encode(), entry.data]
            return out
        if op == "trim":
            first = await e.log_trim(tenant, ns, opt_int(0) or 0, fence=fence)
            return [b"ok", str(first).encode()]
        return [b"error", b"bad_request", f"unknown op {op[:40]!r}".encode()]
