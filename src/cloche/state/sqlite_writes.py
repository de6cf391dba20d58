"""The SQLite state engine's writes: the statements each write runs inside a group's transaction.

Why it exists: `SqliteEngine` (state/sqlite.py) checks a request and hands it to the
group-commit writer (state/sqlite_writer.py), which runs it on its thread inside the
transaction it shares with the other writes waiting then. What each write does to the
tables (a conditional put or delete, a batch, a log append or trim, a grant, the sweep
of expired values) is here, one function each, called as `fn(writer, db, *args)`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cloche.state.engine import Appended, Conflict, Op, OpResult, conflict_of

if TYPE_CHECKING:
    import sqlite3

    from cloche.state.sqlite_writer import GroupWriter

# A live value: not a tombstone and not expired (?1 = now).
LIVE = "value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)"
PUT_ANY = (
    "INSERT INTO kv (ns_id, key, value, version, expires_at) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = excluded.value, version = kv.version + 1, "
    "expires_at = excluded.expires_at RETURNING version"
)
# put_any when the writer knows the key's version: the upsert's effect on a row at that
# version, without RETURNING (which costs SQLite more than the update itself).
PUT_KNOWN = (
    "UPDATE kv SET value = ?, version = version + 1, expires_at = NULL WHERE ns_id = ? AND key = ? AND version = ?"
)
PUT_ABSENT = (
    "INSERT INTO kv (ns_id, key, value, version, expires_at) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (ns_id, key) DO UPDATE SET value = excluded.value, version = kv.version + 1, "
    "expires_at = excluded.expires_at "
    "WHERE kv.value IS NULL OR (kv.expires_at IS NOT NULL AND kv.expires_at <= ?) RETURNING version"
)
PUT_MATCH = (
    "UPDATE kv SET value = ?, version = version + 1, expires_at = ? "
    f"WHERE ns_id = ? AND key = ? AND version = ? AND {LIVE} RETURNING version"
)
DELETE_ANY = (
    "UPDATE kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = ? AND key = ? AND {LIVE} RETURNING version"
)
DELETE_MATCH = (
    "UPDATE kv SET value = NULL, version = version + 1, expires_at = NULL "
    f"WHERE ns_id = ? AND key = ? AND version = ? AND {LIVE} RETURNING version"
)
CURRENT = f"SELECT version, {LIVE} FROM kv WHERE ns_id = ? AND key = ?"


def _current(db: sqlite3.Connection, nid: int, key: str, now: float) -> int | None:
    """The live version of key, or None when absent (never written, deleted, expired)."""
    row = db.execute(CURRENT, (now, nid, key)).fetchone()
    return row[0] if row and row[1] else None


def _conflict(db: sqlite3.Connection, nid: int | None, op: Op, now: float, index: int | None) -> Conflict:
    return conflict_of(op, _current(db, nid, op.key, now) if nid is not None else None, index)


def put(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, op: Op, index: int | None) -> int:
    now = time.time()
    expires = now + op.ttl_s if op.ttl_s else None
    if op.if_match is not None:
        nid = w.ns_id(db, tenant, ns, create=False)
        rows = db.execute(PUT_MATCH, (op.value, expires, nid, op.key, op.if_match, now)).fetchall() if nid else []
    else:
        nid = w.ns_id(db, tenant, ns, create=True)
        if op.if_none_match:
            rows = db.execute(PUT_ABSENT, (nid, op.key, op.value, expires, now)).fetchall()
        else:
            rows = db.execute(PUT_ANY, (nid, op.key, op.value, expires)).fetchall()
    if not rows:
        raise _conflict(db, nid, op, now, index)
    return rows[0][0]


def put_any(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, key: str, value: bytes) -> int:
    """An unconditional put. When the writer remembers the key's version, it updates the row
    at exactly that version and checks that one row changed: a stale or wrong hint changes
    nothing and falls back to the upsert, so the hint can never give a wrong version."""
    nid = w.ns_ids.get((tenant, ns)) or w.ns_id(db, tenant, ns, create=True)
    assert nid is not None  # created on first write
    known = w.known_versions.get((nid, key))
    if known is not None and db.execute(PUT_KNOWN, (value, nid, key, known)).rowcount == 1:
        version = known + 1
    else:
        version = db.execute(PUT_ANY, (nid, key, value, None)).fetchall()[0][0]
    w.know_version(nid, key, version)
    return version


def delete(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, op: Op,
           index: int | None) -> int | None:  # fmt: skip
    """The tombstone's version, or None when the key was already absent."""
    now = time.time()
    nid = w.ns_id(db, tenant, ns, create=False)
    if nid is None:
        rows = []
    elif op.if_match is not None:
        rows = db.execute(DELETE_MATCH, (nid, op.key, op.if_match, now)).fetchall()
    else:
        rows = db.execute(DELETE_ANY, (nid, op.key, now)).fetchall()
    if not rows and op.if_match is not None:
        raise _conflict(db, nid, op, now, index)
    return rows[0][0] if rows else None


def check(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, op: Op, index: int) -> int | None:
    now = time.time()
    nid = w.ns_id(db, tenant, ns, create=False)
    current = _current(db, nid, op.key, now) if nid is not None else None
    if (op.if_none_match and current is not None) or (op.if_match is not None and current != op.if_match):
        raise _conflict(db, nid, op, now, index)
    return current


def batch(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, ops: list[Op]) -> list[OpResult]:
    results = []
    for i, op in enumerate(ops):
        if op.op == "put":
            results.append(OpResult("put", op.key, put(w, db, tenant, ns, op, i)))
        elif op.op == "delete":
            v = delete(w, db, tenant, ns, op, i)
            results.append(OpResult("delete", op.key, v, v is not None))
        else:
            v = check(w, db, tenant, ns, op, i)
            results.append(OpResult("check", op.key, v, v is not None))
    return results


def append(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, data: bytes,
           idem: str | None) -> Appended:  # fmt: skip
    nid = w.ns_id(db, tenant, ns, create=True)
    now = time.time()
    if idem is not None:
        row = db.execute("SELECT seq FROM log_idem WHERE ns_id = ? AND idem_key = ?", (nid, idem)).fetchone()
        if row:
            return Appended(row[0], replayed=True)
    (seq,) = db.execute("UPDATE namespaces SET log_next = log_next + 1 WHERE id = ? RETURNING log_next - 1",
                        (nid,)).fetchone()  # fmt: skip
    db.execute("INSERT INTO log (ns_id, seq, data, created_at) VALUES (?, ?, ?, ?)", (nid, seq, data, now))
    if idem is not None:
        db.execute("INSERT INTO log_idem (ns_id, idem_key, seq, created_at) VALUES (?, ?, ?, ?)",
                   (nid, idem, seq, now))  # fmt: skip
    return Appended(seq)


def trim(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, upto: int) -> int:
    nid = w.ns_id(db, tenant, ns, create=False)
    if nid is None:
        return 1
    log_next, log_first = db.execute("SELECT log_next, log_first FROM namespaces WHERE id = ?", (nid,)).fetchone()
    upto = min(upto, log_next - 1)
    if upto >= log_first:
        db.execute("DELETE FROM log WHERE ns_id = ? AND seq <= ?", (nid, upto))
        db.execute("UPDATE namespaces SET log_first = ? WHERE id = ?", (upto + 1, nid))
        return upto + 1
    return log_first


def grant(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, sandbox_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO grants (tenant_id, name, sandbox_id, created_at) VALUES (?, ?, ?, ?)",
               (tenant, ns, sandbox_id, time.time()))  # fmt: skip


def revoke(w: GroupWriter, db: sqlite3.Connection, tenant: str, ns: str, sandbox_id: str) -> bool:
    cur = db.execute("DELETE FROM grants WHERE tenant_id = ? AND name = ? AND sandbox_id = ?", (tenant, ns, sandbox_id))
    return cur.rowcount > 0


def sweep_expired(w: GroupWriter, db: sqlite3.Connection) -> int:
    """Expired values become tombstones (their space is freed; the version lives on)."""
    cur = db.execute("UPDATE kv SET value = NULL, expires_at = NULL WHERE expires_at IS NOT NULL AND expires_at <= ?",
                     (time.time(),))  # fmt: skip
    return cur.rowcount
