"""SDK for durable state (KV and log), standalone until it joins `cloche.Client`:

    from cloche.client.state import StateClient
    with StateClient() as st:                       # CLOCHE_URL, CLOCHE_API_KEY
        ns = st.namespace("agent-42")               # or a sandbox id: its own namespace
        v = ns.put("memory/profile", b"{}")         # -> version
        value, version = ns.get("memory/profile")   # (None, None) when absent
        ns.put("memory/profile", b"{...}", if_match=version)   # StateConflict on a race
        seq = ns.append(b"turn 1", idempotency_key="turn-1")
        entries, last = ns.read(after=0, wait_s=10)
"""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx


class StateError(Exception):
    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body or {}


class StateConflict(StateError):
    """412: a condition did not hold. `current_version` (None: absent); `index` for batches."""

    @property
    def current_version(self) -> int | None:
        return self.body.get("current_version")

    @property
    def index(self) -> int | None:
        return self.body.get("index")


def _raise(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": r.text[:200]}
    kind = StateConflict if r.status_code == 412 else StateError
    raise kind(r.status_code, err.get("code", ""), err.get("message", ""), err)


class Namespace:
    def __init__(self, http: httpx.Client, name: str) -> None:
        self._http = http
        self.name = name
        self._base = f"/v1/state/{name}"

    def get(self, key: str) -> tuple[bytes | None, int | None]:
        r = self._http.get(f"{self._base}/kv/{key}")
        if r.status_code == 404:
            return None, None
        _raise(r)
        return r.content, int(r.headers["etag"].strip('"'))

    def put(self, key: str, value: bytes | str, *, if_match: int | None = None, if_none_match: bool = False,
            ttl_s: float | None = None) -> int:  # fmt: skip
        headers = {}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if if_none_match:
            headers["If-None-Match"] = "*"
        params = {"ttl_s": ttl_s} if ttl_s is not None else None
        content = value.encode() if isinstance(value, str) else value
        r = self._http.put(f"{self._base}/kv/{key}", content=content, headers=headers, params=params)
        _raise(r)
        return r.json()["version"]

    def delete(self, key: str, *, if_match: int | None = None) -> None:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
        _raise(self._http.delete(f"{self._base}/kv/{key}", headers=headers))

    def list(self, prefix: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Every live key under prefix ({"key", "version", "size"}), following the pages."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, "limit": limit}
            if cursor:
                params["cursor"] = cursor
            r = self._http.get(f"{self._base}/kv", params=params)
            _raise(r)
            body = r.json()
            out += body["items"]
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def batch(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Atomic: ops like {"op": "put", "key": k, "value": b"..." | "text", "if_match": 3}."""
        wire = []
        for op in ops:
            op = dict(op)
            if isinstance(op.get("value"), bytes):
                op["value_b64"] = base64.b64encode(op.pop("value")).decode()
            wire.append(op)
        r = self._http.post(f"{self._base}/batch", json={"ops": wire})
        _raise(r)
        return r.json()["results"]

    def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self._http.post(f"{self._base}/log", content=data.encode() if isinstance(data, str) else data,
                            headers=headers)  # fmt: skip
        _raise(r)
        return r.json()["seq"]

    def read(self, after: int = 0, limit: int = 100, wait_s: float = 0) -> tuple[list[tuple[int, bytes]], int]:
        """([(seq, data)], last_seq); wait_s > 0 long-polls for the first new entry."""
        r = self._http.get(f"{self._base}/log", params={"after": after, "limit": limit, "wait_s": wait_s,
                                                        "encoding": "base64"}, timeout=wait_s + 30)  # fmt: skip
        _raise(r)
        body = r.json()
        return [(i["seq"], base64.b64decode(i["data_b64"])) for i in body["items"]], body["last_seq"]

    def trim(self, upto: int) -> int:
        r = self._http.post(f"{self._base}/log/trim", json={"upto": upto})
        _raise(r)
        return r.json()["first_seq"]


class StateClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        url = url or os.environ.get("CLOCHE_URL", "http://127.0.0.1:8787")
        key = api_key or os.environ.get("CLOCHE_API_KEY", "")
        self._http = httpx.Client(base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {key}"})

    def namespace(self, name: str) -> Namespace:
        return Namespace(self._http, name)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
