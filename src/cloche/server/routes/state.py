"""Durable state routes: a versioned KV and an append-only log per namespace.

Namespaces belong to the calling tenant (A's `foo` is not B's `foo`) and are created by
their first write; a sandbox's own namespace is named after its id. Versions travel as
ETags (`"3"`); conditions on writes (RFC 9110 §13.1): `If-Match: "3"` (a list: any of
them; `*`: the key must exist) and `If-None-Match: *` (the key must not exist; a list:
the key must not be at any of them), answering 412 on a conflict with
`{"error": {"code": "precondition_failed", "message", "key", "current_version"}}`
(plus `"index"` for the failing op of a batch). A malformed tag (`"1x"`, `3`) matches no
version, so `If-Match` with nothing else is always a 412. `If-None-Match: "3"` on a GET
answers 304 while the key is still at version 3.

Inside a sandbox (/.cloche/host/state.sock, see cloche.state.sandbox) the default
namespace is the sandbox's own; `PUT /v1/state/{ns}/grants/{sandbox_id}` shares the
tenant's named namespace `ns` with one of its sandboxes.

Log appends answer 201 `{"seq": N}`; a replay of an `Idempotency-Key` already used in
the namespace answers 200 `{"seq": <original>, "replayed": true}` (and the header
`Idempotent-Replayed: true`) and adds nothing. Log entries are returned as `data`
(UTF-8 text) or `data_b64` (anything else, or every entry with `?encoding=base64`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloche.control.errors import ApiError, not_found
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.state.engine import Conflict, Item, Op, StateEngine, StateError
from cloche.store.db import Tenant

router = APIRouter(prefix="/v1/state", tags=["state"])
MAX_WAIT_S = 20  # a long poll answers (possibly empty) within this; clients poll again
T = TypeVar("T")


def _engine(request: Request) -> StateEngine:
    return request.app.state.state.engine


def fail(e: StateError) -> JSONResponse:
    """A state error's answer: `{"error": {"code", "message"}}` (plus the conflict's fields)."""
    body: dict[str, Any] = {"code": e.code, "message": e.message}
    if isinstance(e, Conflict):
        body.update(key=e.key, current_version=e.current_version)
        if e.index is not None:
            body["index"] = e.index
    return JSONResponse({"error": body}, e.status)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


Tags = frozenset[int] | Literal["*"]


def _tags(raw: str) -> Tags:
    """An If-Match / If-None-Match value: `*`, or the versions its entity tags name. A
    malformed tag never matches (RFC 9110 §13.1.1), so it names no version."""
    if raw.strip() == "*":
        return "*"
    versions = set()
    for part in raw.split(","):
        tag = part.strip().removeprefix("W/")
        if 3 <= len(tag) <= 20 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
            versions.add(int(tag[1:-1]))
    return frozenset(v for v in versions if 1 <= v <= 2**62)


@dataclass(frozen=True)
class Condition:
    """A write's preconditions, from its If-Match or If-None-Match header."""

    header: str = ""  # which one ("": none)
    raw: str = ""
    tags: Tags = "*"

    def holds(self, version: int | None) -> bool:
        """Whether a key now at `version` (None: absent) may be written."""
        if self.header == "If-Match":
            return version is not None and (self.tags == "*" or version in self.tags)
        if self.header == "If-None-Match":
            return version is None if self.tags == "*" else version not in self.tags
        return True

    def engine_args(self) -> tuple[int | None, bool] | None:
        """(if_match, if_none_match) for the engine when it can check this condition in
        the write itself; None when the route must read, check and compare-and-set."""
        if not self.header:
            return None, False
        if self.header == "If-None-Match" and self.tags == "*":
            return None, True
        if self.header == "If-Match" and self.tags != "*" and len(self.tags) == 1:
            return next(iter(self.tags)), False
        return None

    def failed(self, key: str, version: int | None) -> Conflict:
        state = "does not exist" if version is None else f"is at version {version}"
        return Conflict(f"key {key!r} {state} ({self.header}: {self.raw[:40]})", key=key, current_version=version)


def _condition(request: Request) -> Condition:
    return condition_of(request.headers.get("if-match"), request.headers.get("if-none-match"))


def condition_of(if_match: str | None, if_none_match: str | None) -> Condition:
    """A write's condition from its If-Match and If-None-Match headers (None: absent)."""
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "invalid_request", "If-Match and If-None-Match cannot be combined")
    if if_match is not None:
        return Condition("If-Match", if_match, _tags(if_match))
    if if_none_match is not None:
        return Condition("If-None-Match", if_none_match, _tags(if_none_match))
    return Condition()


async def _conditional(engine: StateEngine, tenant: Tenant, ns: str, key: str, condition: Condition,
                       write: Callable[[int | None, bool], Awaitable[T]]) -> T:  # fmt: skip
    """`write(if_match, if_none_match)` under `condition`: in one step when the engine can
    check it, else read the key, check, and write only if it is still at that version."""
    direct = condition.engine_args()
    if direct is not None:
        return await write(*direct)
    for _ in range(5):
        item = await engine.kv_get(tenant.id, ns, key)
        version = item.version if item else None
        if not condition.holds(version):
            raise condition.failed(key, version)
        try:
            return await write(version, version is None)
        except Conflict:
            continue  # it changed in between: look again
    raise Conflict(f"key {key!r} kept changing ({condition.header}); retry", key=key, current_version=None)


TtlParam = Annotated[float | None, Query(gt=0, le=10 * 365 * 86400, description="expire the key after this long")]


KV_TEMPLATE = "/v1/state/{ns}/kv/{key}"  # the routes' path, as the access log names it


@router.put("/{ns}/kv/{key:path}", responses={412: {}, 413: {}})
async def put_key(ns: str, key: str, request: Request, tenant: CurrentTenant, ttl_s: TtlParam = None) -> Response:
    """Store the raw request body under `key`: 200 `{"version": N}` with `ETag: "N"`."""
    return await _put(request, tenant, ns, key, ttl_s)


async def _put(request: Request, tenant: Tenant, ns: str, key: str, ttl_s: float | None) -> Response:
    condition = _condition(request)
    body = await request.body()
    try:
        version = await put_value(_engine(request), tenant, ns, key, body, condition, ttl_s)
    except StateError as e:
        return fail(e)
    return JSONResponse({"version": version}, headers=_etag(version))


async def put_value(engine: StateEngine, tenant: Tenant, ns: str, key: str, body: bytes, condition: Condition,
                    ttl_s: float | None) -> int:  # fmt: skip
    """Store `body` under `key` if `condition` holds: the new version (StateError if not)."""

    async def write(if_match: int | None, if_none_match: bool) -> int:
        return await engine.kv_put(tenant.id, ns, key, body, if_match=if_match, if_none_match=if_none_match,
                                   ttl_s=ttl_s)  # fmt: skip

    return await _conditional(engine, tenant, ns, key, condition, write)


@router.get("/{ns}/kv/{key:path}", responses={200: {"content": {"application/octet-stream": {}}}, 304: {}, 404: {}})
async def get_key(ns: str, key: str, request: Request, tenant: CurrentTenant) -> Response:
    """The raw value with `ETag: "version"` (and `X-Cloche-Expires-At` for a key with a TTL)."""
    return await _get(request, tenant, ns, key)


async def _get(request: Request, tenant: Tenant, ns: str, key: str) -> Response:
    try:
        item = await get_value(_engine(request), tenant, ns, key)
    except StateError as e:
        return fail(e)
    headers = _etag(item.version)
    if item.expires_at is not None:
        headers["X-Cloche-Expires-At"] = f"{item.expires_at:.3f}"
    if not_modified(request.headers.get("if-none-match"), item.version):
        return Response(status_code=304, headers=headers)
    return Response(item.value, media_type="application/octet-stream", headers=headers)


async def get_value(engine: StateEngine, tenant: Tenant, ns: str, key: str) -> Item:
    """The key's live value (404 when there is none)."""
    item = await engine.kv_get(tenant.id, ns, key)
    if item is None:
        raise ApiError(404, "not_found", f"key {key!r} not found in namespace {ns!r}")
    return item


def not_modified(if_none_match: str | None, version: int) -> bool:
    """Whether a GET with this If-None-Match is answered 304 (the key is still at one of its tags)."""
    return if_none_match is not None and (tags := _tags(if_none_match)) != "*" and version in tags


@router.delete("/{ns}/kv/{key:path}", status_code=204, responses={412: {}})
async def delete_key(ns: str, key: str, request: Request, tenant: CurrentTenant) -> Response:
    """204 whether or not the key existed (deletes are idempotent); with If-Match, 412 unless it
    is at that version."""
    condition = _condition(request)
    if condition.header == "If-None-Match":
        raise ApiError(400, "invalid_request", "If-None-Match makes no sense on DELETE")
    engine = _engine(request)

    async def delete(if_match: int | None, _: bool) -> bool:
        return await engine.kv_delete(tenant.id, ns, key, if_match=if_match)

    try:
        await _conditional(engine, tenant, ns, key, condition, delete)
    except StateError as e:
        return fail(e)
    return Response(status_code=204)


class KeyOut(BaseModel):
    key: str
    version: int
    size: int


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


@router.get("/{ns}/kv", response_model=KeyList)
async def list_keys(ns: str, request: Request, tenant: CurrentTenant,
                    prefix: Annotated[str, Query(max_length=1024)] = "",
                    cursor: Annotated[str | None, Query(max_length=1024)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:  # fmt: skip
    """Live keys starting with `prefix`, in byte order, `limit` at a time; pass `next_cursor`
    back as `cursor` for the next page (null: no more)."""
    try:
        page = await _engine(request).kv_list(tenant.id, ns, prefix=prefix, cursor=cursor, limit=limit)
    except StateError as e:
        return fail(e)
    return JSONResponse({"items": [{"key": k.key, "version": k.version, "size": k.size} for k in page.items],
                         "next_cursor": page.next_cursor})  # fmt: skip


class BatchOp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["put", "delete", "check"]
    key: str = Field(..., min_length=1, max_length=1024)
    value: str | None = Field(None, description="UTF-8 text value (put)")
    value_b64: str | None = Field(None, description="base64 value (put), instead of value")
    if_match: int | None = Field(None, ge=1)
    if_none_match: bool = False
    ttl_s: float | None = Field(None, gt=0)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ops: list[BatchOp] = Field(..., min_length=1, max_length=128)


@router.post("/{ns}/batch", responses={412: {}, 413: {}})
async def batch(ns: str, body: BatchIn, request: Request, tenant: CurrentTenant) -> Response:
    """Apply every op in order in one transaction, or none: 200 `{"results": [{"op", "key",
    "version", "existed"}]}`, or 412 naming the failing op's `index`. Each op sees the
    effects of the ops before it; `check` only asserts its conditions."""
    ops = []
    for i, o in enumerate(body.ops):
        if o.value is not None and o.value_b64 is not None:
            raise ApiError(400, "invalid_request", f"ops[{i}]: give value or value_b64, not both")
        if o.op != "put" and (o.value is not None or o.value_b64 is not None or o.ttl_s is not None):
            raise ApiError(400, "invalid_request", f"ops[{i}]: only put takes a value or ttl_s")
        if o.value_b64 is not None:
            try:
                value = base64.b64decode(o.value_b64, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "invalid_request", f"ops[{i}].value_b64 is not valid base64") from None
        else:
            value = (o.value or "").encode()
        ops.append(Op(o.op, o.key, value, o.if_match, o.if_none_match, o.ttl_s))
    try:
        results = await _engine(request).batch(tenant.id, ns, ops)
    except StateError as e:
        return fail(e)
    return JSONResponse({"results": [{"op": r.op, "key": r.key, "version": r.version, "existed": r.existed}
                                     for r in results]})  # fmt: skip


@router.post("/{ns}/log", status_code=201, responses={200: {"description": "an idempotent replay"}, 413: {}})
async def append(ns: str, request: Request, tenant: CurrentTenant) -> Response:
    """Append the raw body: 201 `{"seq": N}`; a replayed Idempotency-Key: 200 with the original seq."""
    data = await request.body()
    try:
        r = await _engine(request).log_append(tenant.id, ns, data, request.headers.get("idempotency-key"))
    except StateError as e:
        return fail(e)
    if r.replayed:
        return JSONResponse({"seq": r.seq, "replayed": True}, 200, headers={"Idempotent-Replayed": "true"})
    return JSONResponse({"seq": r.seq}, 201)


@router.get("/{ns}/log")
async def read_log(ns: str, request: Request, tenant: CurrentTenant,
                   after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
                   encoding: Annotated[Literal["auto", "base64"], Query()] = "auto") -> Response:  # fmt: skip
    """Entries with seq > `after`, oldest first: `{"items": [{"seq", "data" | "data_b64"}],
    "last_seq", "first_seq"}`. With `wait_s`, waits up to that long for the first new entry
    (long poll, at most 20 s); poll again with `after` = the last seq received."""
    engine = _engine(request)
    try:
        if wait_s > 0:
            page = await engine.log_wait(tenant.id, ns, after, wait_s, limit)
        else:
            page = await engine.log_read(tenant.id, ns, after, limit)
    except StateError as e:
        return fail(e)
    items = []
    for entry in page.items:
        if encoding == "auto":
            try:
                items.append({"seq": entry.seq, "data": entry.data.decode()})
                continue
            except UnicodeDecodeError:
                pass
        items.append({"seq": entry.seq, "data_b64": base64.b64encode(entry.data).decode()})
    return JSONResponse({"items": items, "last_seq": page.last_seq, "first_seq": page.first_seq})


class TrimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upto: int = Field(..., ge=0, le=2**62)


@router.post("/{ns}/log/trim")
async def trim_log(ns: str, body: TrimIn, request: Request, tenant: CurrentTenant) -> Response:
    """Drop every entry with seq <= `upto`: `{"first_seq": oldest kept}`. Seqs never restart."""
    try:
        first = await _engine(request).log_trim(tenant.id, ns, body.upto)
    except StateError as e:
        return fail(e)
    return JSONResponse({"first_seq": first})


def _own_sandbox(request: Request, tenant: Tenant, sandbox_id: str) -> None:
    row = ctx(request).store.sandbox(sandbox_id)
    if row is None or row.tenant_id != tenant.id:
        raise not_found("sandbox", sandbox_id)


@router.put("/{ns}/grants/{sandbox_id}", status_code=204, responses={404: {}})
async def grant(ns: str, sandbox_id: str, request: Request, tenant: CurrentTenant) -> Response:
    """Let one of the tenant's sandboxes use the named namespace `ns` from inside
    (`cloche-state -n NS ...`). Grants outlive the sandbox's processes (stop/start)."""
    _own_sandbox(request, tenant, sandbox_id)
    try:
        await _engine(request).grant(tenant.id, ns, sandbox_id)
    except StateError as e:
        return fail(e)
    return Response(status_code=204)


@router.delete("/{ns}/grants/{sandbox_id}", status_code=204)
async def revoke(ns: str, sandbox_id: str, request: Request, tenant: CurrentTenant) -> Response:
    """Withdraw a grant; the sandbox's next request for `ns` is refused."""
    try:
        await _engine(request).revoke(tenant.id, ns, sandbox_id)
    except StateError as e:
        return fail(e)
    return Response(status_code=204)


@router.get("/{ns}/grants")
async def list_grants(ns: str, request: Request, tenant: CurrentTenant) -> Response:
    """`{"sandboxes": [ids granted the namespace]}`."""
    try:
        ids = await _engine(request).grants(tenant.id, ns)
    except StateError as e:
        return fail(e)
    return JSONResponse({"sandboxes": ids})
