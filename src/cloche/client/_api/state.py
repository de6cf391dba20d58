"""Durable state endpoints of a namespace: KV (with versions, conditions, TTL, batches),
the append-only log and the grants that let sandboxes reach it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from .._wire import compact
from ..models import BatchResult, KeyPage, LogEntry, LogPage, StateValue
from .call import DEFAULT, Call, seg
from .responses import parse_json, parse_none


def _ns(namespace: str, *rest: str) -> str:
    return "/".join([f"/v1/state/{seg(namespace)}", *rest])


def _kv(namespace: str, key: str) -> str:
    if not key:
        raise ValueError("a state key must not be empty")
    return _ns(namespace, "kv", quote(key, safe="/"))


def _version(etag: str | None) -> int:
    tag = (etag or "").strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ValueError(f"missing or malformed ETag {etag!r}")
    return int(tag)


def _conditions(if_match: int | None, if_none_match: bool) -> dict[str, str]:
    if if_match is not None and if_none_match:
        raise ValueError("if_match and if_none_match cannot be combined")
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = f'"{int(if_match)}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    return headers


def kv_get(namespace: str, key: str) -> Call[StateValue]:
    """``GET /v1/state/{ns}/kv/{key}``: the raw value and its version (from the ETag)."""

    def parse(response: httpx.Response) -> StateValue:
        expires = response.headers.get("x-cloche-expires-at")
        return StateValue(
            key=key,
            value=response.content,
            version=_version(response.headers.get("etag")),
            expires_at=float(expires) if expires else None,  # type: ignore[arg-type]
        )

    return Call("GET", _kv(namespace, key), parse)


def kv_put(
    namespace: str,
    key: str,
    value: bytes | str,
    *,
    if_match: int | None = None,
    if_none_match: bool = False,
    ttl_s: float | None = None,
) -> Call[int]:
    """``PUT /v1/state/{ns}/kv/{key}`` with the raw value; parses the new version."""
    return Call(
        "PUT",
        _kv(namespace, key),
        lambda r: int(r.json()["version"]),
        params={"ttl_s": str(ttl_s)} if ttl_s is not None else None,
        content=value.encode() if isinstance(value, str) else bytes(value),
        content_type="application/octet-stream",
        headers=_conditions(if_match, if_none_match),
    )


def kv_delete(namespace: str, key: str, *, if_match: int | None = None) -> Call[None]:
    """``DELETE /v1/state/{ns}/kv/{key}`` (idempotent; ``If-Match`` makes it conditional)."""
    return Call("DELETE", _kv(namespace, key), parse_none, headers=_conditions(if_match, False))


def kv_list(namespace: str, prefix: str = "", cursor: str | None = None, limit: int = 100) -> Call[KeyPage]:
    """``GET /v1/state/{ns}/kv?prefix=&cursor=&limit=``: one page of live keys."""
    params = compact(prefix=prefix, cursor=cursor, limit=str(limit))
    return Call("GET", _ns(namespace, "kv"), parse_json(KeyPage), params=params)


def _batch_op(i: int, op: Mapping[str, Any]) -> dict[str, Any]:
    wire = dict(op)
    if "op" not in wire or "key" not in wire:
        raise ValueError(f"ops[{i}] needs 'op' and 'key'")
    value = wire.pop("value", None)
    if isinstance(value, bytes | bytearray | memoryview):
        wire["value_b64"] = base64.b64encode(bytes(value)).decode()
    elif value is not None:
        wire["value"] = str(value)
    return {k: v for k, v in wire.items() if v is not None and v is not False}


def kv_batch(namespace: str, ops: Sequence[Mapping[str, Any]]) -> Call[list[BatchResult]]:
    """``POST /v1/state/{ns}/batch``: all operations in one transaction, or none."""
    body = {"ops": [_batch_op(i, op) for i, op in enumerate(ops)]}
    adapter = TypeAdapter(list[BatchResult])
    return Call("POST", _ns(namespace, "batch"), lambda r: adapter.validate_python(r.json()["results"]), json=body)


def log_append(namespace: str, data: bytes | str, *, idempotency_key: str | None = None) -> Call[int]:
    """``POST /v1/state/{ns}/log`` with the raw entry; parses its sequence number."""
    return Call(
        "POST",
        _ns(namespace, "log"),
        lambda r: int(r.json()["seq"]),
        content=data.encode() if isinstance(data, str) else bytes(data),
        content_type="application/octet-stream",
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
    )


def _log_page(response: httpx.Response) -> LogPage:
    body = response.json()
    items = [
        LogEntry(
            seq=item["seq"],
            data=base64.b64decode(item["data_b64"]) if "data_b64" in item else item["data"].encode(),
        )
        for item in body["items"]
    ]
    return LogPage(items=items, last_seq=body.get("last_seq", 0), first_seq=body.get("first_seq", 0))


def log_read(namespace: str, after: int = 0, limit: int = 100, wait_s: float = 0) -> Call[LogPage]:
    """``GET /v1/state/{ns}/log?after=&limit=&wait_s=`` (entries as base64, decoded to bytes)."""
    params = {"after": str(after), "limit": str(limit), "encoding": "base64"}
    if wait_s:
        params["wait_s"] = str(wait_s)
    return Call(
        "GET",
        _ns(namespace, "log"),
        _log_page,
        params=params,
        read_timeout=wait_s + 30 if wait_s else DEFAULT,
    )


def log_trim(namespace: str, upto: int) -> Call[int]:
    """``POST /v1/state/{ns}/log/trim``: drop entries up to ``upto``; parses ``first_seq``."""
    return Call("POST", _ns(namespace, "log", "trim"), lambda r: int(r.json()["first_seq"]), json={"upto": upto})


def grant(namespace: str, sandbox_id: str) -> Call[None]:
    """``PUT /v1/state/{ns}/grants/{sandbox_id}``."""
    return Call("PUT", _ns(namespace, "grants", seg(sandbox_id)), parse_none)


def revoke(namespace: str, sandbox_id: str) -> Call[None]:
    """``DELETE /v1/state/{ns}/grants/{sandbox_id}``."""
    return Call("DELETE", _ns(namespace, "grants", seg(sandbox_id)), parse_none)


def list_grants(namespace: str) -> Call[list[str]]:
    """``GET /v1/state/{ns}/grants``: the ids of the sandboxes granted the namespace."""
    return Call("GET", _ns(namespace, "grants"), lambda r: [str(i) for i in r.json()["sandboxes"]])
