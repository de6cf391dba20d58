"""Durable state benchmarks: engine-level puts/reads (SQLite with group commit, the
naive one-transaction-per-put SQLite baseline, PostgreSQL) and the same through the
HTTP API of a real server process.

Run by bench/run.py (`run() -> list[Result]`) or standalone: `python bench/state_bench.py`
prints a markdown table. PostgreSQL comes from BENCH_PG_DSN, else CLOCHE_TEST_PG_DSN,
else scripts/postgres-test.sh is run to start the local test server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from results import Goal, Result, env_float, env_int, failed, log, percentile  # noqa: E402

from cloche.state.postgres import PostgresEngine  # noqa: E402
from cloche.state.sqlite import SCHEMA, SqliteEngine  # noqa: E402
from cloche.state.sqlite_writes import PUT_ANY, PUT_KNOWN  # noqa: E402

DATA_PARENT = Path(os.environ.get("BENCH_DATA_DIR", "/var/tmp"))
WRITERS = env_int("BENCH_STATE_WRITERS", 64)
DURATION_S = env_float("BENCH_STATE_DURATION_S", 4.0)
VALUE = b"v" * env_int("BENCH_STATE_VALUE_BYTES", 100)
KEYS_PER_WRITER = 100

T_ENGINE = "Durable state: engine-level KV throughput"
T_HTTP = "Durable state: KV through the HTTP API"
DESCRIPTIONS = {
    T_ENGINE: (
        f"{WRITERS} asyncio writers in one process, each `await engine.kv_put(...)` back to back "
        f"for {DURATION_S:g} s on its own {KEYS_PER_WRITER} keys ({len(VALUE)}-byte values), every "
        "put acknowledged only after its commit is durable (SQLite WAL + synchronous=FULL, on "
        "the real disk under /var/tmp; PostgreSQL with fsync=on, synchronous_commit=on, on "
        "the same disk). Group commit: one writer thread runs each put as it takes it, and the "
        "puts that arrive meanwhile join the same transaction, committed once (one fsync). "
        "Baseline: the same engine with max_group=1, i.e. one transaction and one fsync per "
        "put, measured in the same run. Reads: the same "
        "writers' keys read back by the same number of concurrent readers. SQLite alone: "
        "the ceiling any engine on SQLite has here, measured in the same run: one thread, no "
        f"event loop, the engine's own schema on a file of the same keys, and the statement "
        "the engine's writer runs for a put of a key whose version it knows (an update at "
        f"that version, checked to change one row), {WRITERS} puts per transaction (what the "
        "engine's writer gets), each transaction committed with its fsync before the next "
        "begins."
    ),
    T_HTTP: (
        f"A real `cloche up` server process (uvicorn, one event loop), {WRITERS} keep-alive "
        "HTTP/1.1 connections from a second process, each sending `PUT "
        "/v1/state/{ns}/kv/{key}` (or GET) back to back with a bearer key; latency is per "
        "request at the client, throughput over the whole window. Client and server share "
        "the machine's 2 cores. Server CPU per request (user + system time of every thread of "
        "the server process over the window, divided by the requests) moves much less with "
        "other load on the machine than throughput does."
    ),
}


# ---- engine level --------------------------------------------------------------------------


async def _drive(n: int, duration_s: float, op: Callable[[int, int], Awaitable[Any]]) -> tuple[int, float, list[float]]:
    stop_at = time.perf_counter() + duration_s
    counts = [0] * n
    lat: list[float] = []

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            await op(w, i)
            lat.append((time.perf_counter() - t) * 1000)
            i += 1
        counts[w] = i

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(n)))
    return sum(counts), time.perf_counter() - t0, lat


async def engine_figures(engine: Any, duration_s: float) -> dict[str, float]:
    await engine.open()
    tenant = "bench-" + uuid.uuid4().hex[:8]
    try:
        for w in range(WRITERS):  # warm-up: namespace, keys, statement caches
            await engine.kv_put(tenant, "bench", f"w{w}/k0", VALUE)

        async def put(w: int, i: int) -> None:
            await engine.kv_put(tenant, "bench", f"w{w}/k{i % KEYS_PER_WRITER}", VALUE)

        async def get(w: int, i: int) -> None:
            await engine.kv_get(tenant, "bench", f"w{w}/k0")

        puts, put_s, put_lat = await _drive(WRITERS, duration_s, put)
        gets, get_s, _ = await _drive(WRITERS, min(duration_s, 2.0), get)
        stats = getattr(engine, "stats", None)
        group = stats.requests / stats.commits if stats and stats.commits else 0.0
        return {"puts_s": puts / put_s, "put_p99": percentile(put_lat, 99), "gets_s": gets / get_s,
                "group": group}  # fmt: skip
    finally:
        await engine.close()


def sqlite_alone(path: Path, group: int, duration_s: float) -> float:
    """Durable puts/s of SQLite by itself: `group` puts of known keys per transaction, back to back."""
    import sqlite3

    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        nid = db.execute("INSERT INTO namespaces (tenant_id, name, created_at) VALUES ('bench', 'bench', 0) "
                         "RETURNING id").fetchone()[0]  # fmt: skip
        keys = [f"w{w}/k{k}" for k in range(KEYS_PER_WRITER) for w in range(WRITERS)]  # as the writers go
        db.execute("BEGIN")
        db.executemany(PUT_ANY.replace(" RETURNING version", ""), [(nid, k, VALUE, None) for k in keys])
        db.execute("COMMIT")
        versions = dict.fromkeys(keys, 1)
        puts, i = 0, 0
        start = time.perf_counter()
        while time.perf_counter() - start < duration_s:
            db.execute("BEGIN IMMEDIATE")
            for _ in range(group):
                key = keys[i % len(keys)]
                if db.execute(PUT_KNOWN, (VALUE, nid, key, versions[key])).rowcount != 1:
                    raise RuntimeError(f"SQLite alone: {key} is not at the version it was given")
                versions[key] += 1
                i += 1
            db.execute("COMMIT")
            puts += group
        return puts / (time.perf_counter() - start)
    finally:
        db.close()


def pg_dsn() -> str:
    dsn = os.environ.get("BENCH_PG_DSN") or os.environ.get("CLOCHE_TEST_PG_DSN")
    if dsn:
        return dsn
    out = subprocess.run([str(REPO / "scripts" / "postgres-test.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


# ---- HTTP level ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProc:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        code = ("import sys; from pathlib import Path; from cloche.server.runner import serve; "
                "serve(Path(sys.argv[1]), '127.0.0.1', int(sys.argv[2]), 0)")  # fmt: skip
        self.log = open(data_dir.parent / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(data_dir), str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "CLOCHE_RATE_PER_S": "10000000",
                                          "CLOCHE_RATE_BURST": "10000000", **env})  # fmt: skip
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited; see " + str(data_dir.parent / "server.log"))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
        while not (data_dir / "admin-key").exists():
            time.sleep(0.05)
        time.sleep(0.2)
        self.key = (data_dir / "admin-key").read_text().strip()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


LOADGEN = r"""
import asyncio, sys, time, json
port, key, method = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conns, duration, value_len = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
value = b"v" * value_len

async def conn(c, stop_at, lat, counts, statuses):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    while True:
        path = f"/v1/state/bench/kv/c{c}/k{i % 100}" if method == "PUT" else f"/v1/state/bench/kv/c{c}/k0"
        body = value if method == "PUT" else b""
        req = (f"{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
        t = time.perf_counter()
        if t >= stop_at:
            break
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        if n:
            await r.readexactly(n)
        lat.append((time.perf_counter() - t) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        i += 1
    counts[c] = i
    w.close()

async def main():
    lat, counts, statuses = [], [0] * conns, {}
    if method == "GET":  # the keys read must exist
        await asyncio.gather(*(warm(c) for c in range(conns)))
    t0 = time.perf_counter()
    stop_at = t0 + duration
    await asyncio.gather(*(conn(c, stop_at, lat, counts, statuses) for c in range(conns)))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"n": sum(counts), "s": elapsed, "lat": lat, "statuses": statuses}))

async def warm(c):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    body = value
    w.write((f"PUT /v1/state/bench/kv/c{c}/k0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
             f"content-length: {len(body)}\r\n\r\n").encode() + body)
    head = await r.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            await r.readexactly(int(line[15:]))
    w.close()

asyncio.run(main())
"""


# The floor under any HTTP figure: uvicorn (same settings as `cloche up`) serving a plain
# ASGI app that reads the body and answers 200 {"version": 1}; no framework, auth or state.
BARE_APP = r"""
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b'{"version":1}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(port: int, key: str, method: str, duration_s: float, pid: int) -> dict[str, float]:
    """Requests/s and latency at the client, and the server's CPU per request: a figure
    other load on the machine moves much less than throughput."""
    argv = [sys.executable, "-c", LOADGEN, str(port), key, method, str(WRITERS), str(duration_s), str(len(VALUE))]
    cpu = _cpu_s(pid)
    p = subprocess.run(argv, capture_output=True, text=True, check=True)
    cpu = _cpu_s(pid) - cpu
    res = json.loads(p.stdout)
    bad = {k: v for k, v in res["statuses"].items() if k not in ("200",)}
    if bad:
        raise RuntimeError(f"{method}: unexpected statuses {bad}")
    m = method.lower()
    return {f"{m}_s": res["n"] / res["s"], f"{m}_p50": percentile(res["lat"], 50),
            f"{m}_p99": percentile(res["lat"], 99), f"{m}_cpu_us": cpu / res["n"] * 1e6}  # fmt: skip


def bare_figures(duration_s: float) -> dict[str, float]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("bare uvicorn did not start") from None
                time.sleep(0.05)
        return _load(port, "-", "PUT", duration_s, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def per_request_costs(n: int = 20000) -> dict[str, float]:
    """In-process microseconds per call of pieces every KV request pays: the API key
    lookup (`Store.authenticate`) of a key seen before (remembered: a hash and a dict) and
    of a key's first request (a hash and one SQLite query), and the access log line."""
    import logging

    from cloche.server import access
    from cloche.store.db import Store

    tmp = Path(tempfile.mkdtemp(prefix="cloche-state-bench-", dir=DATA_PARENT))
    try:
        store = Store(tmp / "cloche.db")
        tenant, _, key = store.create_tenant("bench", 10, 10.0, 1024)
        t = time.perf_counter()
        for _ in range(n):
            store.authenticate(key)
        auth_us = (time.perf_counter() - t) / n * 1e6
        keys = [store.add_key(tenant.id)[1] for _ in range(n // 10)]
        t = time.perf_counter()
        for k in keys:
            store.authenticate(k)
        first_us = (time.perf_counter() - t) / len(keys) * 1e6
        store.close()
        with open(os.devnull, "w") as sink:
            handler = access.BatchedHandler(sink)
            access.log.addHandler(handler)
            level, access.log.level = access.log.level, logging.INFO
            try:

                async def lines() -> None:  # on an event loop, as in the server: batched
                    for _ in range(n):
                        access.write(time.time(), "PUT", "/v1/state/{ns}/kv/{key}", 200, 0.001, tenant.id, None, "r")

                t = time.perf_counter()
                asyncio.run(lines())
                handler.flush()
                log_us = (time.perf_counter() - t) / n * 1e6
            finally:
                access.log.removeHandler(handler)
                access.log.setLevel(level)
        return {"auth_us": auth_us, "auth_first_us": first_us, "log_us": log_us}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def http_figures(env: dict[str, str], duration_s: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="cloche-state-bench-", dir=DATA_PARENT))
    srv = ServerProc(tmp / "data", env)
    try:
        pid = srv.proc.pid
        return {**_load(srv.port, srv.key, "PUT", duration_s, pid), **_load(srv.port, srv.key, "GET", duration_s, pid)}
    finally:
        srv.stop()
        # A server with pool_size=0 starts no sandbox; drop its runtime directory too.
        from cloche.node.runtime import node_key

        shutil.rmtree(Path("/run/cloche") / node_key(tmp / "data"), ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


# ---- results -----------------------------------------------------------------------------


def http_results(dsn: str) -> list[Result]:
    """KV through HTTP, with what each layer costs in the same run: bare uvicorn (the
    floor), the server with its access log off and on, GET (no commit) against PUT."""
    results: list[Result] = []
    log("state: bare uvicorn baseline")
    try:
        bare = bare_figures(DURATION_S)
        results += [
            Result("state.http.bare.puts", T_HTTP, f"bare uvicorn ASGI app, PUT answered 200 ({WRITERS} connections)",
                   bare["put_s"], "requests/s", label="bare"),
            Result("state.http.bare.put_p99", T_HTTP, "bare uvicorn: latency p99", bare["put_p99"], "ms"),
            Result("state.http.bare.put_cpu", T_HTTP, "bare uvicorn: server CPU per request", bare["put_cpu_us"], "µs",
                   label="bare CPU"),
        ]  # fmt: skip
    except Exception as e:
        results.append(failed("state.http.bare.puts", T_HTTP, "bare uvicorn requests/s", e, "requests/s"))
    runs = [("sqlite", "SQLite", {}), ("sqlite_nolog", "SQLite, access log off", {"CLOCHE_ACCESS_LOG": "0"})]
    if dsn:
        runs.append(("pg", "PostgreSQL", {"CLOCHE_STATE_DSN": dsn}))
    for kind, name, env in runs:
        log(f"state: HTTP API on {name}")
        try:
            h = http_figures(env, DURATION_S)
            goal_rate = Goal(">=", 5000) if kind == "sqlite" else None
            goal_p99 = Goal("<=", 20) if kind == "sqlite" else None
            results += [
                Result(f"state.http.{kind}.puts", T_HTTP, f"{name}: PUT /kv durable puts/s ({WRITERS} connections)",
                       h["put_s"], "requests/s", goal=goal_rate, baseline="state.http.bare.puts"),
                Result(f"state.http.{kind}.put_p50", T_HTTP, f"{name}: PUT latency p50", h["put_p50"], "ms"),
                Result(f"state.http.{kind}.put_p99", T_HTTP, f"{name}: PUT latency p99", h["put_p99"], "ms",
                       goal=goal_p99),
                Result(f"state.http.{kind}.put_cpu", T_HTTP, f"{name}: PUT server CPU per request", h["put_cpu_us"],
                       "µs", baseline="state.http.bare.put_cpu"),
                Result(f"state.http.{kind}.gets", T_HTTP, f"{name}: GET /kv reads/s (no commit)", h["get_s"],
                       "requests/s", baseline="state.http.bare.puts"),
                Result(f"state.http.{kind}.get_p99", T_HTTP, f"{name}: GET latency p99", h["get_p99"], "ms"),
                Result(f"state.http.{kind}.get_cpu", T_HTTP, f"{name}: GET server CPU per request", h["get_cpu_us"],
                       "µs", baseline="state.http.bare.put_cpu"),
            ]  # fmt: skip
        except Exception as e:
            results.append(failed(f"state.http.{kind}.puts", T_HTTP, f"{name} HTTP puts/s", e, "requests/s"))
    costs = per_request_costs()
    note = (f"Per request, in process: API key lookup (Store.authenticate) {costs['auth_us']:.1f} µs for a key seen "
            f"before, {costs['auth_first_us']:.1f} µs for its first request; access log line "
            f"{costs['log_us']:.1f} µs. Ratios are to the bare uvicorn app in the same run; GET against PUT "
            "separates the commit path, access log on against off its cost; server CPU per request counts every "
            "thread of the server process.")  # fmt: skip
    results += [
        Result("state.http.auth_us", T_HTTP, "API key lookup per request, key seen before (in process)",
               costs["auth_us"], "µs", note=note),
        Result("state.http.auth_first_us", T_HTTP, "API key lookup, a key's first request (in process)",
               costs["auth_first_us"], "µs"),
        Result("state.http.log_us", T_HTTP, "access log line per request (in process)", costs["log_us"], "µs"),
    ]  # fmt: skip
    return results


def run() -> list[Result]:
    results: list[Result] = []
    tmp = Path(tempfile.mkdtemp(prefix="cloche-state-bench-", dir=DATA_PARENT))
    try:
        log("state: SQLite naive baseline (one transaction per put)")
        try:
            naive = asyncio.run(engine_figures(SqliteEngine(tmp / "naive.db", max_group=1), DURATION_S))
            results.append(Result("state.sqlite.naive.puts", T_ENGINE, "SQLite, one transaction per put: puts/s",
                                  naive["puts_s"], "puts/s", label="naive"))  # fmt: skip
        except Exception as e:
            results.append(failed("state.sqlite.naive.puts", T_ENGINE, "SQLite naive puts/s", e, "puts/s"))
        log("state: SQLite alone (no engine)")
        alone = None
        try:
            alone = sqlite_alone(tmp / "alone.db", WRITERS, DURATION_S)
            results.append(Result("state.sqlite.alone.puts", T_ENGINE,
                                  f"SQLite alone: durable puts/s, {WRITERS} per transaction, one thread",
                                  alone, "puts/s", label="alone"))  # fmt: skip
        except Exception as e:
            results.append(failed("state.sqlite.alone.puts", T_ENGINE, "SQLite alone puts/s", e, "puts/s"))
        log("state: SQLite group commit")
        try:
            g = asyncio.run(engine_figures(SqliteEngine(tmp / "group.db"), DURATION_S))
            share = f" That is {g['puts_s'] / alone:.0%} of SQLite alone in the same run." if alone else ""
            results += [
                Result("state.sqlite.puts", T_ENGINE, f"SQLite, group commit: durable puts/s ({WRITERS} writers)",
                       g["puts_s"], "puts/s", goal=Goal(">=", 50_000), baseline="state.sqlite.naive.puts",
                       note=f"SQLite group commit: {g['group']:.0f} puts per commit (fsync) on average.{share}"),
                Result("state.sqlite.put_p99", T_ENGINE, "SQLite, group commit: put latency p99", g["put_p99"], "ms"),
                Result("state.sqlite.gets", T_ENGINE, f"SQLite: reads/s ({WRITERS} readers)", g["gets_s"], "reads/s"),
            ]  # fmt: skip
        except Exception as e:
            results.append(failed("state.sqlite.puts", T_ENGINE, "SQLite group commit puts/s", e, "puts/s"))
        dsn = ""
        try:
            dsn = pg_dsn()
            log("state: PostgreSQL engine")
            p = asyncio.run(engine_figures(PostgresEngine(dsn, max_size=32), DURATION_S))
            results += [
                Result("state.pg.puts", T_ENGINE, f"PostgreSQL: durable puts/s ({WRITERS} writers, pool 32)",
                       p["puts_s"], "puts/s", baseline="state.sqlite.naive.puts"),
                Result("state.pg.put_p99", T_ENGINE, "PostgreSQL: put latency p99", p["put_p99"], "ms"),
                Result("state.pg.gets", T_ENGINE, f"PostgreSQL: reads/s ({WRITERS} readers)", p["gets_s"], "reads/s"),
            ]  # fmt: skip
        except Exception as e:
            results.append(failed("state.pg.puts", T_ENGINE, "PostgreSQL puts/s", e, "puts/s"))
        results += http_results(dsn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    results = run()
    by_key = {r.key: r for r in results}
    print("| Table | Metric | Figure | Goal | Baseline | Status |\n|---|---|---:|---|---|---|")
    for r in results:
        base = by_key.get(r.baseline) if r.baseline else None
        ratio = r.value / base.value if base and base.value and r.value else None
        met = r.goal.met(r.value, ratio) if r.goal and r.value is not None else None
        fig = f"{r.value:,.1f} {r.unit}" if r.value is not None else f"failed: {r.error}"
        base_s = f"{base.value:,.0f} {base.unit} ({ratio:.1f}x)" if base and ratio else ""
        goal = r.goal.describe(r.unit) if r.goal else ""
        status = {True: "met", False: "MISSED", None: ""}[met]
        print(f"| {r.table.split(': ', 1)[-1]} | {r.metric} | {fig} | {goal} | {base_s} | {status} |")
    for r in results:
        if r.note:
            print(f"\n- {r.note}")


if __name__ == "__main__":
    main()
