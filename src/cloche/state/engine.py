"""The state engine interface: a versioned KV and an append-only log per namespace.

A namespace is identified by (tenant id, name): tenant A's `foo` is not tenant B's
`foo`. Namespaces are created on their first write; reading one that does not exist
answers like an empty one.

KV: every key carries a version that only increases (a delete leaves a tombstone, so a
key deleted and written again continues from its old version and a stale If-Match can
never match a new incarnation). Conditions: `if_match=N` needs the live key at version
N; `if_none_match=True` needs the key absent (never written, deleted or expired).

Log: sequence numbers are gap-free per namespace, starting at 1; an append with an
idempotency key that was already used in the namespace returns the original seq and
adds nothing (the key is remembered even after the entry is trimmed).

Both backends (SQLite, PostgreSQL) implement `StateEngine` with identical semantics;
tests/state/test_conformance.py holds them to it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

# ---- limits and validation ---------------------------------------------------------


@dataclass(frozen=True)
class StateLimits:
    max_value_bytes: int = 1 << 20
    max_entry_bytes: int = 1 << 20
    max_key_bytes: int = 512
    max_ns_bytes: int = 128
    max_batch_ops: int = 128
    max_list_limit: int = 1000
    max_read_limit: int = 1000
    max_idempotency_key_bytes: int = 200
    max_ttl_s: float = 10 * 365 * 86400.0


NS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Printable ASCII except space and a few characters that make URLs and shells painful;
# '/' is allowed (hierarchical keys), but not as the first character nor doubled.
KEY_RE = re.compile(r"^[A-Za-z0-9_.\-:@=+,~!$*()\[\]/]+$")


class StateError(Exception):
    """Base class; `status` and `code` map onto the HTTP error body."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidName(StateError):
    code = "invalid_name"


class InvalidArgument(StateError):
    code = "invalid_request"


class TooLarge(StateError):
    status = 413
    code = "too_large"


class NotFound(StateError):
    status = 404
    code = "not_found"


class Unavailable(StateError):
    status = 503
    code = "unavailable"


class StaleFence(StateError):
    """A write carried the fencing token of an instance that has since been claimed again
    (a newer token for the same instance reached the database first): nothing was
    written, and the writer must stop."""

    status = 409
    code = "stale_fence"


class Conflict(StateError):
    """A condition did not hold. `index` is the failing op of a batch (else None)."""

    status = 412
    code = "precondition_failed"

    def __init__(self, message: str, *, key: str, current_version: int | None,
                 index: int | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.key = key
        self.current_version = current_version
        self.index = index


def check_ns(name: str, limits: StateLimits) -> str:
    return _check_ns(name, limits.max_ns_bytes)


def check_key(key: str, limits: StateLimits) -> str:
    return _check_key(key, limits.max_key_bytes)


# Validated names are cached (raising calls are not), so hot keys cost a dict hit. The
# cache is keyed on the one limit each check reads, not on StateLimits, whose hash would
# be computed from all its fields on every call.
@functools.lru_cache(maxsize=65536)
def _check_ns(name: str, max_bytes: int) -> str:
    if not name or len(name.encode()) > max_bytes or not NS_RE.fullmatch(name):
        raise InvalidName(
            f"invalid namespace {name[:80]!r}: 1..{max_bytes} characters from "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return name


@functools.lru_cache(maxsize=65536)
def _check_key(key: str, max_bytes: int) -> str:
    if (not key or len(key.encode()) > max_bytes or not KEY_RE.fullmatch(key)
            or key.startswith("/") or "//" in key or key in (".", "..")
            or "/./" in f"/{key}/" or "/../" in f"/{key}/"):  # fmt: skip
        raise InvalidName(
            f"invalid key {key[:80]!r}: 1..{max_bytes} printable ASCII characters "
            "(no spaces, quotes, '#', '%', '?', '&', '\\'); '/' separates segments but may not "
            "lead, double up, or form '.'/'..' segments"
        )
    return key


def check_value(value: bytes, limits: StateLimits) -> bytes:
    if len(value) > limits.max_value_bytes:
        raise TooLarge(f"value is {len(value)} bytes; the limit is {limits.max_value_bytes}")
    return value


def check_ttl(ttl_s: float | None, limits: StateLimits) -> float | None:
    if ttl_s is None:
        return None
    if not (0 < ttl_s <= limits.max_ttl_s) or ttl_s != ttl_s:
        raise InvalidArgument(f"ttl_s must be in (0, {limits.max_ttl_s:g}]")
    return float(ttl_s)


def check_version(v: int | None) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > 2**62:
        raise InvalidArgument(f"invalid version {v!r}: a positive integer")
    return v


def check_conditions(if_match: int | None, if_none_match: bool) -> None:
    check_version(if_match)
    if if_match is not None and if_none_match:
        raise InvalidArgument("If-Match and If-None-Match cannot be combined")


READ_LOG_BYTES = 8 << 20  # one log read answers with at most about this many bytes (both backends)


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[lo, hi) of the keys starting with prefix (keys are ASCII, so a +1 on the last char)."""
    if not prefix:
        return "", None
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


# ---- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """Who is writing, in cluster mode: the instance `(app, key)` (a sandbox is
    `("sandbox", <sandbox id>)`) and the fencing token of its current claim (docs/cluster.md,
    "Fencing tokens"). A write carrying it is rejected with `StaleFence` once a newer
    token for the same instance has been seen."""

    app: str
    key: str
    token: int


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    version: int
    expires_at: float | None = None


@dataclass(frozen=True)
class KeyInfo:
    key: str
    version: int
    size: int


@dataclass(frozen=True)
class Page:
    items: list[KeyInfo]
    next_cursor: str | None


@dataclass(frozen=True)
class Op:
    """One operation of an atomic batch. `check` only asserts its conditions."""

    op: Literal["put", "delete", "check"]
    key: str
    value: bytes = b""
    if_match: int | None = None
    if_none_match: bool = False
    ttl_s: float | None = None


def conflict_of(op: Op, current: int | None, index: int | None) -> Conflict:
    """The 412 for `op`, whose condition failed on a key now at version `current` (None:
    absent); `index` is its place in a batch."""
    if op.if_none_match:
        msg = f"key {op.key!r} exists (version {current})"
    elif current is None:
        msg = f"key {op.key!r} does not exist (If-Match {op.if_match})"
    else:
        msg = f"key {op.key!r} is at version {current}, not {op.if_match}"
    if index is not None:
        msg = f"ops[{index}]: {msg}"
    return Conflict(msg, key=op.key, current_version=current, index=index)


@dataclass(frozen=True)
class OpResult:
    op: str
    key: str
    version: int | None  # put: the new version; delete: the tombstone's; check: current
    existed: bool = True


@dataclass(frozen=True)
class Entry:
    seq: int
    data: bytes


@dataclass(frozen=True)
class LogPage:
    items: list[Entry]
    last_seq: int  # the newest seq ever appended in the namespace (0: none)
    first_seq: int  # the oldest seq still kept (last_seq + 1 when empty)


@dataclass(frozen=True)
class Appended:
    seq: int
    replayed: bool = False


@dataclass
class OpsCounter:
    """Cheap counters an engine keeps for /metrics and benchmarks."""

    commits: int = 0
    requests: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def validate_batch(ops: list[Op], limits: StateLimits) -> None:
    if not ops:
        raise InvalidArgument("a batch needs at least one op")
    if len(ops) > limits.max_batch_ops:
        raise InvalidArgument(f"a batch holds at most {limits.max_batch_ops} ops, got {len(ops)}")
    for i, op in enumerate(ops):
        if op.op not in ("put", "delete", "check"):
            raise InvalidArgument(f"ops[{i}].op must be put, delete or check")
        try:
            check_key(op.key, limits)
            check_conditions(op.if_match, op.if_none_match)
            if op.op == "put":
                check_value(op.value, limits)
                check_ttl(op.ttl_s, limits)
        except StateError as e:
            e.message = f"ops[{i}]: {e.message}"
            e.args = (e.message,)
            raise
    total = sum(len(op.value) for op in ops)
    if total > limits.max_value_bytes * 4:
        raise TooLarge(f"batch values add up to {total} bytes; the limit is {limits.max_value_bytes * 4}")


# ---- the interface ----------------------------------------------------------------------


class StateEngine(Protocol):
    limits: StateLimits

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def kv_get(self, tenant: str, ns: str, key: str) -> Item | None: ...

    # Every write takes an optional `fence` (cluster mode): with it, the write is rejected
    # with `StaleFence`, and nothing written, if the fence's instance has a newer token.
    async def kv_put(self, tenant: str, ns: str, key: str, value: bytes, *, if_match: int | None = None,
                     if_none_match: bool = False, ttl_s: float | None = None,
                     fence: Fence | None = None) -> int: ...  # fmt: skip

    async def kv_delete(self, tenant: str, ns: str, key: str, *, if_match: int | None = None,
                        fence: Fence | None = None) -> bool: ...  # fmt: skip

    async def kv_list(self, tenant: str, ns: str, prefix: str = "", cursor: str | None = None,
                      limit: int = 100) -> Page: ...  # fmt: skip

    async def batch(self, tenant: str, ns: str, ops: list[Op], *, fence: Fence | None = None) -> list[OpResult]: ...

    async def log_append(self, tenant: str, ns: str, data: bytes, idempotency_key: str | None = None, *,
                         fence: Fence | None = None) -> Appended: ...  # fmt: skip

    async def log_read(self, tenant: str, ns: str, after: int = 0, limit: int = 100) -> LogPage: ...

    async def log_wait(self, tenant: str, ns: str, after: int, timeout_s: float,
                       limit: int = 100) -> LogPage: ...  # fmt: skip

    async def log_trim(self, tenant: str, ns: str, upto: int, *, fence: Fence | None = None) -> int: ...

    # Grants: which of the tenant's sandboxes may use a named namespace from inside.
    async def grant(self, tenant: str, ns: str, sandbox_id: str) -> None: ...

    async def revoke(self, tenant: str, ns: str, sandbox_id: str) -> bool: ...

    async def grants(self, tenant: str, ns: str) -> list[str]: ...

    async def granted(self, tenant: str, ns: str, sandbox_id: str) -> bool: ...

    # Record a new claim's token before its instance starts, so that a write still in
    # flight from the previous holder is rejected even while the new one has written nothing.
    async def advance_fence(self, fence: Fence) -> None: ...


SANDBOX_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def check_sandbox_id(sandbox_id: str) -> str:
    if not SANDBOX_ID_RE.fullmatch(sandbox_id):
        raise InvalidArgument(f"invalid sandbox id {sandbox_id[:80]!r}")
    return sandbox_id


def check_idempotency_key(key: str | None, limits: StateLimits) -> str | None:
    if key is None:
        return None
    if not key or len(key.encode()) > limits.max_idempotency_key_bytes or not key.isprintable() \
            or not key.isascii():  # fmt: skip
        n = limits.max_idempotency_key_bytes
        raise InvalidArgument(f"Idempotency-Key must be 1..{n} printable ASCII characters")
    return key


def check_log(data: bytes, idempotency_key: str | None, limits: StateLimits) -> None:
    if len(data) > limits.max_entry_bytes:
        raise TooLarge(f"log entry is {len(data)} bytes; the limit is {limits.max_entry_bytes}")
    check_idempotency_key(idempotency_key, limits)


def check_seq(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > 2**62:
        raise InvalidArgument(f"{name} must be a non-negative integer")
    return n


def clamp_limit(limit: int, maximum: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument("limit must be a positive integer")
    return min(limit, maximum)
