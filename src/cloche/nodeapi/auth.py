"""Who may call a node: a bearer credential per node, checked in constant time.

Why a bearer credential and not mutual TLS: the transport is already HTTPS with the
cluster CA (tls.py), which authenticates the node to its caller; the caller's side then
needs only a secret that reaches one node and nothing else. A bearer credential rotates
with a grace period by rewriting one file the running node re-reads (no restart, no
re-handshake), and every control-plane replica can hold it without a client certificate
of its own. The node keeps only SHA-256 digests of its valid credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from cloche.nodeapi.tls import write_private

CREDENTIALS = "credentials.json"  # digests of the valid credentials, with their end of validity
CREDENTIAL = "credential"  # the newest credential itself, for handing to the control plane
PUBLISHED = "node-credentials"  # under the cluster dir: each node's newest credential, for the server replicas


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Credentials:
    """The valid credentials of one node, kept in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path = directory / CREDENTIALS
        self._loaded_at: float | None = None
        self._valid: list[tuple[bytes, float | None]] = []

    def _read(self) -> list[dict[str, object]]:
        try:
            return list(json.loads(self._path.read_text()))
        except FileNotFoundError:
            return []

    def issue(self, grace_s: float) -> str:
        """A new credential; the ones valid until now stay valid `grace_s` more seconds."""
        now = time.time()
        kept = []
        for entry in self._read():
            not_after = entry["not_after"]
            end = now + grace_s if not_after is None else min(float(not_after), now + grace_s)  # type: ignore[arg-type]
            if end > now:
                kept.append({"sha256": entry["sha256"], "not_after": end})
        token = "cln_" + secrets.token_urlsafe(32)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_private(self._path, json.dumps([*kept, {"sha256": _digest(token), "not_after": None}]).encode())
        write_private(self.directory / CREDENTIAL, token.encode())
        return token

    def current(self) -> str:
        """The newest credential, issuing the first one when there is none."""
        try:
            return (self.directory / CREDENTIAL).read_text().strip()
        except FileNotFoundError:
            return self.issue(0)

    def verify(self, token: str) -> bool:
        """Whether `token` is valid now. Every digest is compared, in constant time each."""
        try:
            mtime = os.stat(self._path).st_mtime
        except FileNotFoundError:
            return False
        if mtime != self._loaded_at:  # rotated: read the new set
            self._valid = [(str(e["sha256"]).encode(), e["not_after"]) for e in self._read()]  # type: ignore[misc]
            self._loaded_at = mtime
        digest, now, ok = _digest(token).encode(), time.time(), False
        for valid, not_after in self._valid:
            ok |= hmac.compare_digest(digest, valid) and (not_after is None or now < not_after)
        return ok


def publish_credential(cluster_dir: Path, node_id: str, token: str) -> Path:
    """Where the server replicas read the credential that reaches node `node_id`: mode
    0640 with the directory's group, so replicas that run as another user read it when
    that group is theirs (deploy/); the directory is made 0700 when missing."""
    path = cluster_dir / PUBLISHED / node_id
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, token.encode())
    group = path.parent.stat().st_gid
    if path.stat().st_gid != group:
        os.chown(path, -1, group)
    path.chmod(0o640)
    return path


def published_credential(cluster_dir: Path, node_id: str) -> str:
    """The credential node `node_id` published for the replicas (`publish_credential`)."""
    return (cluster_dir / PUBLISHED / node_id).read_text().strip()


HEALTHZ = "/healthz"


class BearerAuth:
    """ASGI middleware: every HTTP request and WebSocket needs `Authorization: Bearer
    <credential>`; HTTP gets 401 without a valid one, a WebSocket is refused (403).
    `GET /healthz` alone is open: it says nothing but "up", and the other nodes time it
    to measure the round trip between regions (probes.py) without holding this one's key."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scope["path"] == HEALTHZ or (scheme.lower() == "bearer" and self.credentials.verify(token.strip())):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            body = b'{"kind":"Unauthorized","code":"unauthorized","message":"a valid node credential is required"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                }
            )
            await send({"type": "http.response.body", "body": body})  # fmt: skip
