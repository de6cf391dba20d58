"""Through the HTTP API of a real `cloche up`: exec round trip, create from the warm
pool, exec throughput with 32 concurrent clients, server memory with many sandboxes,
and one-to-one agents (invoke, wake from paused, wake from hibernated, many users with
few awake).

Run by bench/run.py or standalone (`python bench/api_bench.py`). Sizes:
BENCH_API_EXEC_N (500), BENCH_API_CREATE_N (30), BENCH_API_THROUGHPUT_S (5),
BENCH_API_SANDBOXES (1000), BENCH_AGENT_N (30), BENCH_AGENT_USERS (1000),
BENCH_AGENT_AWAKE (50).
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import Goal, Result, env_float, env_int, failed, latency_results, log  # noqa: E402
from server import BenchServer  # noqa: E402

T_API = "Control plane: through the HTTP API"
T_AGENTS = "One-to-one agents: invoke through the HTTP API"
DESCRIPTIONS = {
    T_API: (
        "A real `cloche up` subprocess on loopback (rate limits lifted), driven with httpx over keep-alive "
        "connections, and with wrk (a C load generator, from Debian) where the Python client's own CPU would "
        'cap the figure. Exec is `POST /v1/sandboxes/{id}/exec` of `["true"]`; create-from-pool is '
        "`POST /v1/sandboxes` answered from a warm pool of 4 (each sample waits for the pool to refill); "
        "throughput is 32 wrk connections looping on exec over 4 sandboxes (1 cpu each). Server memory is the "
        "PSS of the "
        "`cloche up` process (control plane, node runtime, records) with the stated number of live sandboxes."
    ),
    T_AGENTS: (
        "The bundled memo agent (`src/cloche/examples/memo_agent.py`, Python's http.server on the agent's "
        "unix socket) deployed as an app. Invoke latency is `POST /v1/apps/memo/agents/{key}/invoke` to a "
        "running instance; wake-from-paused pauses the instance's sandbox first (cgroup freezer); "
        "wake-from-hibernated hibernates it first (processes stopped, layer snapshotted, disk kept on the "
        "node), so the invoke includes restarting the sandbox and the agent's Python server. The last rows "
        "drive many distinct users with at most N awake: instances beyond N are hibernated, least recently "
        "used first, and users return at random."
    ),
}


def _exec_round_trip(client: httpx.Client, sid: str, n: int) -> list[float]:
    samples = []
    for i in range(n + 20):
        start = time.perf_counter()
        r = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]})
        elapsed = (time.perf_counter() - start) * 1000
        r.raise_for_status()
        if i >= 20:
            samples.append(elapsed)
    return samples


WRK_SCRIPT = """
paths = {%s}
i = 0
wrk.method = "POST"
wrk.body = '{"cmd": ["true"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  i = i %% #paths + 1
  return wrk.format(nil, paths[i])
end
"""


def _wrk(url: str, key: str, paths: list[str], connections: int, seconds: float) -> tuple[float, dict[int, float]]:
    """Drive exec with wrk (a C load generator), so the client's own cost does not cap
    the figure. Returns (requests/s, {percentile: ms})."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % (", ".join(f'"{p}"' for p in paths), key))
    try:
        argv = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
                "-s", str(script), url]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink()
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    pct = {int(m.group(1)): float(m.group(2)) * units[m.group(3)]
           for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}  # fmt: skip
    return rate, pct


def _pool_ready(client: httpx.Client) -> int:
    return client.get("/v1/nodes").json()["items"][0]["pools"][0]["ready"]


def _create_from_pool(client: httpx.Client, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        deadline = time.time() + 60
        while _pool_ready(client) < 4 and time.time() < deadline:
            time.sleep(0.02)
        start = time.perf_counter()
        r = client.post("/v1/sandboxes", json={})
        samples.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        client.delete(f"/v1/sandboxes/{r.json()['id']}")
    return samples


async def _throughput(url: str, headers: dict[str, str], sids: list[str], seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as ac:

        async def worker(i: int) -> None:
            nonlocal done
            sid = sids[i % len(sids)]
            while time.perf_counter() < stop:
                r = await ac.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]})
                r.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(32)))
        return done / (time.perf_counter() - start)


async def _create_many(url: str, headers: dict[str, str], n: int) -> list[str]:
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as ac:

        async def one() -> str:
            async with sem:
                r = await ac.post("/v1/sandboxes", json={"disk_mb": 32, "memory_mb": 32, "cpu": 0.05})
                r.raise_for_status()
                return r.json()["id"]

        return list(await asyncio.gather(*(one() for _ in range(n))))


def bench_control_plane() -> list[Result]:
    out: list[Result] = []
    server = BenchServer("api", pool_size=4)
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as c:
            sids = [c.post("/v1/sandboxes", json={}).json()["id"] for _ in range(4)]
            log("api: exec round trip (one wrk connection)")
            paths = [f"/v1/sandboxes/{sid}/exec" for sid in sids]
            _, one = _wrk(server.url, server.key, paths[:1], 1, env_float("BENCH_API_THROUGHPUT_S", 5))
            for p, goal in ((50, 3.0), (99, 10.0)):
                out.append(Result(f"api.exec.p{p}", T_API, f"exec `true` round trip p{p} (wrk, 1 connection)", one[p],
                                  "ms", goal=Goal("<=", goal)))  # fmt: skip
            out.append(Result("api.exec.vs_runc", T_API, "exec `true` round trip p50 (wrk) vs raw `runc exec` p50",
                              one[50], "ms", goal=Goal("<=", 0.1, on="ratio"), baseline="baseline.runc_exec.p50",
                              note="Goal: at least 10x faster than `runc exec` of the same command, measured "
                              "earlier in the same run (bench/baseline.py)."))  # fmt: skip
            out += latency_results("api.exec_py", T_API, "exec `true` round trip from Python httpx",
                                   _exec_round_trip(c, sids[0], env_int("BENCH_API_EXEC_N", 500)), percentiles=(50, 99),
                                   plot="Exec round trip (CDF)", label="cloche HTTP API (httpx)")  # fmt: skip
            log("api: create from warm pool")
            out += latency_results("api.create_pool", T_API, "create from warm pool",
                                   _create_from_pool(c, env_int("BENCH_API_CREATE_N", 30)), percentiles=(50, 99),
                                   goals={50: Goal("<=", 15)})  # fmt: skip
            log("api: exec throughput, 32 connections")
            rate, many = _wrk(server.url, server.key, paths, 32, env_float("BENCH_API_THROUGHPUT_S", 5))
            out.append(Result("api.exec.throughput", T_API, "exec throughput, 32 concurrent clients (wrk)", rate,
                              "execs/s", goal=Goal(">=", 1000),
                              note=f"32 wrk connections over 4 sandboxes; latency p50 {many.get(50, 0):.1f} ms, "
                              f"p99 {many.get(99, 0):.1f} ms"))  # fmt: skip
            py_rate = asyncio.run(_throughput(server.url, server.headers, sids, env_float("BENCH_API_THROUGHPUT_S", 5)))
            out.append(Result("api.exec.throughput_py", T_API, "exec throughput, 32 asyncio httpx clients", py_rate,
                              "execs/s", note="the Python client's own CPU caps this figure on 2 cores"))  # fmt: skip
            for sid in sids:
                c.delete(f"/v1/sandboxes/{sid}")
            n = env_int("BENCH_API_SANDBOXES", 1000)
            log(f"api: server memory with {n} sandboxes")
            before = server.pss_kib()
            try:
                created = asyncio.run(_create_many(server.url, server.headers, n))
                listed = len(c.get("/v1/sandboxes", params={"state": "running"}).json()["items"])
                after = server.pss_kib()
                out.append(Result("api.server_pss", T_API, f"server PSS with {listed} running sandboxes",
                                  after / 1024, "MiB",
                                  note=f"{before / 1024:.1f} MiB with none; {len(created)} created through the API",
                                  extra={"per_sandbox_kib": (after - before) / max(1, listed)}))  # fmt: skip
                out.append(Result("api.server_pss_per", T_API, "server PSS growth per sandbox",
                                  (after - before) / max(1, listed), "KiB"))  # fmt: skip
            except Exception as exc:  # report, do not hide, a failure at scale
                out.append(failed("api.server_pss", T_API, f"server memory with {n} sandboxes", exc, "MiB"))
    finally:
        server.close()
    return out


# ---- agents ------------------------------------------------------------------------------


def _invoke(c: httpx.Client, key: str, message: str = "hi") -> float:
    start = time.perf_counter()
    r = c.post(f"/v1/apps/memo/agents/{key}/invoke", json={"message": message})
    elapsed = (time.perf_counter() - start) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"invoke {key}: {r.status_code} {r.text[:300]}")
    return elapsed


def _sandbox_of(c: httpx.Client, key: str) -> str:
    return c.get(f"/v1/apps/memo/agents/{key}").json()["sandbox_id"]


def bench_agents() -> list[Result]:
    from cloche.examples import memo_app

    out: list[Result] = []
    server = BenchServer("agents", pool_size=2)
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as c:
            spec = memo_app(idle={"pause_after_s": 86400, "hibernate_after_s": 86400})
            c.put("/v1/apps/memo", json=spec).raise_for_status()
            n = env_int("BENCH_AGENT_N", 30)
            log("agents: first invoke, warm invoke")
            first = [_invoke(c, f"user-{i}") for i in range(min(n, 10))]
            warm = [_invoke(c, "user-0") for _ in range(n * 5)]
            out += latency_results("agents.first", T_AGENTS, "first invoke (creates the instance)", first,
                                   percentiles=(50, 95))  # fmt: skip
            out += latency_results("agents.invoke", T_AGENTS, "invoke, running instance", warm, percentiles=(50, 99),
                                   goals={50: Goal("<=", 5)}, plot="Agent invoke latency (CDF)",
                                   label="running")  # fmt: skip
            sid = _sandbox_of(c, "user-0")
            log("agents: wake from paused")
            paused = []
            for _ in range(n):
                c.post(f"/v1/sandboxes/{sid}/pause").raise_for_status()
                paused.append(_invoke(c, "user-0"))
            out += latency_results("agents.wake_paused", T_AGENTS, "invoke, wake from paused", paused,
                                   percentiles=(50, 95), goals={50: Goal("<=", 20)},
                                   plot="Agent invoke latency (CDF)", label="from paused")  # fmt: skip
            log("agents: wake from hibernated")
            hib = []
            for _ in range(n):
                c.post(f"/v1/sandboxes/{sid}/hibernate").raise_for_status()
                hib.append(_invoke(c, "user-0"))
            out += latency_results("agents.wake_hibernated", T_AGENTS, "invoke, wake from hibernated (same node)",
                                   hib, percentiles=(50, 95), goals={50: Goal("<=", 150)},
                                   plot="Agent invoke latency (CDF)", label="from hibernated")  # fmt: skip
            for i in range(min(n, 10)):
                c.delete(f"/v1/apps/memo/agents/user-{i}")
            out += _many_users(c)
    finally:
        server.close()
    return out


def _many_users(c: httpx.Client) -> list[Result]:
    """Many distinct users, at most `awake` instances running: the rest hibernated, LRU."""
    users = env_int("BENCH_AGENT_USERS", 1000)
    awake_cap = env_int("BENCH_AGENT_AWAKE", 50)
    log(f"agents: {users} users, at most {awake_cap} awake")
    awake: list[str] = []  # LRU order, most recent last
    latencies: list[float] = []
    peak = 0
    rng = random.Random(7)
    started = time.perf_counter()
    try:
        order = [f"u{i}" for i in range(users)] + [f"u{rng.randrange(users)}" for _ in range(users // 2)]
        for key in order:
            if key in awake:
                awake.remove(key)
            latencies.append(_invoke(c, key, f"remember {key}"))
            awake.append(key)
            while len(awake) > awake_cap:
                victim = awake.pop(0)
                c.post(f"/v1/sandboxes/{_sandbox_of(c, victim)}/hibernate").raise_for_status()
            peak = max(peak, len(awake))
        items = c.get("/v1/apps/memo/agents").json()["items"]
        running = sum(1 for a in items if a["state"] == "running")
        hibernated = sum(1 for a in items if a["state"] == "hibernated")
        check = rng.sample([a["key"] for a in items if a["state"] == "hibernated"], k=min(20, hibernated))
        intact = sum(1 for key in check if key in c.post(f"/v1/apps/memo/agents/{key}/invoke",
                                                         json={"message": "recall"}).json()["reply"])  # fmt: skip
    except Exception as exc:
        return [failed("agents.many", T_AGENTS, f"{users} users, <= {awake_cap} awake", exc, "agents")]
    elapsed = time.perf_counter() - started
    out = [Result("agents.many.instances", T_AGENTS, f"agent instances on one node ({users} users)", len(items),
                  "agents", note=f"{running} running and {hibernated} hibernated at the end; peak awake {peak}; "
                  f"{len(order)} invokes in {elapsed:.0f} s; memory intact in {intact}/{len(check)} woken "
                  "hibernated users checked")]  # fmt: skip
    out += latency_results("agents.many.invoke", T_AGENTS, f"invoke with <= {awake_cap} awake (mixed wake/create)",
                           latencies, percentiles=(50, 95, 99))  # fmt: skip
    return out


def run() -> list[Result]:
    results: list[Result] = []
    for name, fn in (("control plane", bench_control_plane), ("agents", bench_agents)):
        try:
            results += fn()
        except Exception as exc:
            results.append(failed(f"api.{name}", T_API, name, exc))
    return results


if __name__ == "__main__":
    for r in run():
        print(f"{r.table} | {r.metric}: {r.value} {r.unit} {r.error or ''} {r.note}")
