"""Crash test: writers load a real server process, which is SIGKILLed at 25 random
moments (CLOCHE_CRASH_KILLS for a soak) and restarted each time (one data directory throughout). Afterwards every
acknowledged write is there with its acknowledged version (or the one write after it
that was in flight when the server died), no batch is torn, the log is gap-free and
holds every acknowledged entry (a retried append with its Idempotency-Key returns the
original seq), and SQLite's integrity_check is ok. The same against PostgreSQL, whose
indexes are then verified with amcheck's bt_index_check (heapallindexed).
"""

from __future__ import annotations

import base64
import random
import signal
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Server, crash_rounds
from tests.state.conftest import pg_dsn

KILLS = crash_rounds(25)
WRITERS = 6


@dataclass
class KeyState:
    acked_version: int = 0
    acked_value: bytes | None = None
    unacked: list[bytes] = field(default_factory=list)  # sent since the last ack, no answer: may be there


@dataclass
class Writer:
    wid: int
    keys: dict[str, KeyState] = field(default_factory=dict)
    batch_acked: tuple[int, bytes] | None = None  # (version of both keys, token)
    batch_unacked: list[bytes] = field(default_factory=list)
    appended: dict[int, bytes] = field(default_factory=dict)  # acked seq -> data
    pending_append: tuple[str, bytes] | None = None  # (idempotency key, data) not yet acked
    acks: int = 0
    errors: int = 0


def run_writer(w: Writer, url: str, key: str, ns: str, stop: threading.Event) -> None:
    rng = random.Random(w.wid)
    n = 0
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    while not stop.is_set():
        n += 1
        try:
            if w.pending_append is not None:  # retry until acknowledged, same key
                idem, data = w.pending_append
                r = client.post(f"/v1/state/{ns}/log", content=data, headers={"Idempotency-Key": idem})
                assert r.status_code in (200, 201), r.text
                seq = r.json()["seq"]
                assert seq not in w.appended
                w.appended[seq] = data
                w.pending_append = None
                w.acks += 1
                continue
            action = rng.random()
            if action < 0.5:
                k = f"w{w.wid}/k{rng.randrange(20)}"
                st = w.keys.setdefault(k, KeyState())
                value = f"{w.wid}:{n}".encode()
                st.unacked.append(value)
                r = client.put(f"/v1/state/{ns}/kv/{k}", content=value)
                assert r.status_code == 200, r.text
                v = r.json()["version"]
                assert v > st.acked_version
                st.acked_version, st.acked_value, st.unacked = v, value, []
            elif action < 0.75:
                token = f"{w.wid}:{n}"
                w.batch_unacked.append(token.encode())
                ops = [{"op": "put", "key": f"w{w.wid}/pair/a", "value": token},
                       {"op": "put", "key": f"w{w.wid}/pair/b", "value": token}]  # fmt: skip
                r = client.post(f"/v1/state/{ns}/batch", json={"ops": ops})
                assert r.status_code == 200, r.text
                res = r.json()["results"]
                assert res[0]["version"] == res[1]["version"]
                w.batch_acked, w.batch_unacked = (res[0]["version"], token.encode()), []
            else:
                w.pending_append = (f"w{w.wid}-{n}", f"entry {w.wid}:{n}".encode())
                continue
            w.acks += 1
        except (httpx.HTTPError, OSError):
            w.errors += 1
            time.sleep(0.02)
    client.close()


def verify(url: str, key: str, ns: str, writers: list[Writer]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for w in writers:
            for k, st in w.keys.items():
                r = c.get(f"/v1/state/{ns}/kv/{k}")
                if st.acked_version == 0:
                    assert r.status_code == 404 or r.content in st.unacked, (k, r.status_code)
                    continue
                assert r.status_code == 200, (k, "acknowledged write lost")
                v = int(r.headers["etag"].strip('"'))
                if v == st.acked_version:
                    assert r.content == st.acked_value, (k, v)
                else:  # only writes whose answer was lost to a kill may have landed unacknowledged
                    assert v <= st.acked_version + len(st.unacked) and r.content in st.unacked, (k, v, st)
            a, b = c.get(f"/v1/state/{ns}/kv/w{w.wid}/pair/a"), c.get(f"/v1/state/{ns}/kv/w{w.wid}/pair/b")
            if w.batch_acked is None:
                assert a.status_code == b.status_code
                if a.status_code == 200:
                    assert a.content == b.content and a.content in w.batch_unacked
                continue
            assert a.status_code == b.status_code == 200, "acknowledged batch lost"
            assert a.content == b.content and a.headers["etag"] == b.headers["etag"], "torn batch"
            version = int(a.headers["etag"].strip('"'))
            assert (version, a.content) == w.batch_acked or (
                version <= w.batch_acked[0] + len(w.batch_unacked) and a.content in w.batch_unacked)
        entries: dict[int, bytes] = {}
        after = 0
        while True:
            page = c.get(f"/v1/state/{ns}/log", params={"after": after, "limit": 1000,
                                                           "encoding": "base64"}).json()  # fmt: skip
            if not page["items"]:
                break
            for item in page["items"]:
                entries[item["seq"]] = base64.b64decode(item["data_b64"])
            after = page["items"][-1]["seq"]
        assert list(entries) == list(range(1, page["last_seq"] + 1)), "log seqs have gaps"
        for w in writers:
            for seq, data in w.appended.items():
                assert entries.get(seq) == data, (seq, "acknowledged entry lost or changed")
        assert len(set(entries.values())) == len(entries), "an idempotent retry appended twice"


def crash_run(kind: str, data: Path, dsn: str) -> None:
    env = {"CLOCHE_RATE_PER_S": "1000000", "CLOCHE_RATE_BURST": "1000000"}
    if kind == "postgres":
        env["CLOCHE_STATE_DSN"] = dsn
    srv = Server(data, pool_size=0, env=env)  # each incarnation forked: a restart costs no imports
    srv.start()
    _, key = srv.tenant()
    ns = "crash-" + uuid.uuid4().hex[:8]
    writers = [Writer(i) for i in range(WRITERS)]
    stop = threading.Event()
    threads = [threading.Thread(target=run_writer, args=(w, srv.url, key, ns, stop), daemon=True) for w in writers]
    rng = random.Random(kind)
    try:
        for t in threads:
            t.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.3))
            srv.stop(signal.SIGKILL)
            srv.start()
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join(30)
        acks = sum(w.acks for w in writers)
        assert acks > KILLS * 5, f"{kind}: too little load got through ({acks} acknowledged writes)"
        # Appends still pending at the end are retried once more, against the live server.
        for w in writers:
            if w.pending_append is not None:
                run_writer_once(w, srv.url, key, ns)
        verify(srv.url, key, ns, writers)
    finally:
        stop.set()
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
        srv.wipe()
    if kind == "sqlite":
        db = sqlite3.connect(str(data / "state.db"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    else:  # amcheck: every B-tree of the state tables is consistent with its heap
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            rows = conn.execute("SELECT c.relname, bt_index_check(c.oid, true) FROM pg_class c "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE c.relkind = 'i' AND c.relname LIKE 'state\\_%'").fetchall()  # fmt: skip
            assert len(rows) >= 5, rows


def test_sigkill_under_load(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Both backends at once (two servers, each killed KILLS times), to halve the wall time."""
    runs = {"sqlite": ""}
    try:
        runs["postgres"] = pg_dsn()
    except pytest.skip.Exception:
        pass  # no PostgreSQL outside CI: the SQLite half still runs (under CI=true pg_dsn fails)
    errors: dict[str, BaseException] = {}
    # made here: the first mktemp of a session creates its base directory, and two threads
    # doing that at once raced (FileExistsError)
    data = {kind: tmp_path_factory.mktemp(f"crash-{kind}") / "data" for kind in runs}

    def one(kind: str) -> None:
        try:
            crash_run(kind, data[kind], runs[kind])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[kind] = e

    threads = [threading.Thread(target=one, args=(kind,)) for kind in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for kind, e in errors.items():
        raise AssertionError(f"{kind}: {type(e).__name__}: {e}") from e
    if "postgres" not in runs:
        pytest.skip("CLOCHE_TEST_PG_DSN is not set: only the SQLite half ran")


def run_writer_once(w: Writer, url: str, key: str, ns: str) -> None:
    assert w.pending_append is not None
    idem, data = w.pending_append
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        r = c.post(f"/v1/state/{ns}/log", content=data, headers={"Idempotency-Key": idem})
        assert r.status_code in (200, 201), r.text
        w.appended[r.json()["seq"]] = data
        w.pending_append = None
