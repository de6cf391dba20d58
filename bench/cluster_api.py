"""What a remote node costs a caller: exec round trips, agent invokes and creates per second
through the cluster's API (replica -> node API -> node) against an embedded `cloche up`
(control plane and runtime in one process) measured in the same run, and the bare node API hop
(`RemoteNode.exec` against `NodeRuntime.exec` in this process).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from api_bench import _exec_round_trip, _invoke
from cluster_rig import Rig
from results import Goal, Result, env_int, latency_results, log, percentile
from runtime_bench import Node, exec_true
from server import BenchServer

from cloche.examples import memo_app
from cloche.node.spec import SandboxSpec
from cloche.nodeapi import tls
from cloche.nodeapi.auth import published_credential
from cloche.nodeapi.client import RemoteNode

T_EXEC = "Cluster mode: exec and invoke through a remote node"
T_PLACE = "Cluster mode: placements per second"
EXEC_PLOT = "Cluster mode: exec `true` round trip"


def added(key: str, table: str, what: str, samples: list[float], base: list[float], goal: Goal | None) -> Result:
    """The p50 a path adds over its baseline's p50, in ms."""
    return Result(key, table, what, percentile(samples, 50) - percentile(base, 50), "ms", goal=goal)


def exec_results(rig: Rig, embedded: BenchServer) -> list[Result]:
    n = env_int("BENCH_CLUSTER_EXEC_N", 500)
    n_invoke = env_int("BENCH_CLUSTER_INVOKE_N", 150)
    samples: dict[str, list[float]] = {}
    invokes: dict[str, list[float]] = {}
    for name, url, headers in (("embedded", embedded.url, embedded.headers), ("cluster", rig.url, rig.headers)):
        log(f"cluster: {n} execs and {n_invoke} agent invokes through the {name} API")
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            sid = http.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
            try:
                samples[name] = _exec_round_trip(http, sid, n)
            finally:
                http.delete(f"/v1/sandboxes/{sid}")
            invokes[name] = _invokes(http, n_invoke)
    out = latency_results("cluster.exec.embedded", T_EXEC, "exec `true`, embedded `cloche up`", samples["embedded"],
                          percentiles=(50, 99), plot=EXEC_PLOT, label="embedded `cloche up`")  # fmt: skip
    out += latency_results("cluster.exec.api", T_EXEC, "exec `true`, cluster API (replica -> node)", samples["cluster"],
                           percentiles=(50, 99), plot=EXEC_PLOT, label="cluster API",
                           baselines={50: "cluster.exec.embedded.p50", 99: "cluster.exec.embedded.p99"})  # fmt: skip
    out.append(added("cluster.exec.added.p50", T_EXEC, "added by the remote node, p50", samples["cluster"],
                     samples["embedded"], Goal("<=", 1.0)))  # fmt: skip
    total = out[-1]
    out += latency_results("cluster.invoke.embedded", T_EXEC, "agent invoke, embedded `cloche up`",
                           invokes["embedded"], percentiles=(50, 99))  # fmt: skip
    bases = {p: f"cluster.invoke.embedded.p{p}" for p in (50, 99)}
    out += latency_results("cluster.invoke.api", T_EXEC, "agent invoke, cluster API (replica -> node)",
                           invokes["cluster"], percentiles=(50, 99), baselines=bases)  # fmt: skip
    out.append(added("cluster.invoke.added.p50", T_EXEC, "invoke: added by the remote node, p50", invokes["cluster"],
                     invokes["embedded"], Goal("<=", 1.0)))  # fmt: skip
    out += asyncio.run(_node_hop(rig, n))
    hop = out[-1]
    assert total.value is not None and hop.value is not None
    out.append(Result("cluster.exec.rest.p50", T_EXEC, "of the added p50, the replica's part (added minus the hop's)",
                      total.value - hop.value, "ms",
                      note="The replica's part is what the remote path adds besides the node API hop: the extra "
                      "HTTP hop into the replica, its auth and records in PostgreSQL (SQLite in the embedded "
                      "server), and routing to the node."))  # fmt: skip
    return out


def _invokes(http: httpx.Client, n: int) -> list[float]:
    """Invokes of one running instance of the bundled memo agent, after 20 unmeasured (the
    first creates it); the app is deleted afterwards."""
    spec = memo_app(idle={"pause_after_s": 86400, "hibernate_after_s": 86400})
    http.put("/v1/apps/memo", json=spec).raise_for_status()
    try:
        for _ in range(20):
            _invoke(http, "bench")
        return [_invoke(http, "bench") for _ in range(n)]
    finally:
        http.delete("/v1/apps/memo", params={"state": "true"})


async def _node_hop(rig: Rig, n: int) -> list[Result]:
    """RemoteNode.exec on a sandbox the cluster placed vs NodeRuntime.exec in this process."""
    local_node = Node("cluster-hop")
    local_node.config.network = None  # as the cluster's nodes
    async with local_node as rt:
        sid = (await rt.create(SandboxSpec(), use_pool=False)).id
        for _ in range(20):
            await exec_true(rt, sid)
        local = [await exec_true(rt, sid) for _ in range(n)]
    with rig.client() as http:
        sid = http.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
        try:
            node = next(a for a in rig.local.nodes if a.name == rig.node_of(http, sid))
            cluster_dir = rig.local.root / "cluster"
            credential = published_credential(cluster_dir, node.name)
            remote = RemoteNode(f"https://127.0.0.1:{node.port}", credential, cluster_dir / tls.CA_CERT)
            await remote.start()
            try:
                for _ in range(20):
                    await exec_true(remote, sid)  # type: ignore[arg-type]  # the same Node interface
                hop = [await exec_true(remote, sid) for _ in range(n)]  # type: ignore[arg-type]
            finally:
                await remote.close()
        finally:
            http.delete(f"/v1/sandboxes/{sid}")
    out = latency_results("cluster.hop.local", T_EXEC, "`NodeRuntime.exec` in this process", local,
                          percentiles=(50, 99), label="NodeRuntime.exec")  # fmt: skip
    out += latency_results("cluster.hop.remote", T_EXEC, "`RemoteNode.exec` (node API, HTTPS)", hop,
                           percentiles=(50, 99), baselines={50: "cluster.hop.local.p50", 99: "cluster.hop.local.p99"},
                           label="RemoteNode.exec")  # fmt: skip
    out.append(added("cluster.hop.added.p50", T_EXEC, "added by the node API hop, p50", hop, local, None))
    return out


async def _creates(url: str, headers: dict[str, str], ids: list[str], n: int, concurrency: int) -> float:
    """n creates, `concurrency` at a time, their ids appended to `ids`; creates/s."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as http:

        async def one() -> None:
            async with sem:
                r = await http.post("/v1/sandboxes", json={})
                ids.append(str(r.raise_for_status().json()["id"]))

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start)


def _kill(http: httpx.Client, ids: list[str]) -> None:
    for sid in ids:
        http.delete(f"/v1/sandboxes/{sid}")


def placement_results(rig: Rig, embedded: BenchServer) -> list[Result]:
    n = env_int("BENCH_CLUSTER_CREATES", 64)
    concurrency = env_int("BENCH_CLUSTER_CONCURRENCY", 16)
    log(f"cluster: {n} creates, {concurrency} at a time, embedded then cluster")
    made: list[str] = []
    with httpx.Client(base_url=embedded.url, headers=embedded.headers, timeout=120) as http:
        try:
            base = asyncio.run(_creates(embedded.url, embedded.headers, made, n, concurrency))
        finally:
            _kill(http, made)
    made = []
    with rig.client() as http:
        try:
            rate = asyncio.run(_creates(rig.url, rig.headers, made, n, concurrency))
            spread = Counter(rig.node_of(http, sid) for sid in made)
        finally:
            _kill(http, made)
    placed = ", ".join(f"{node} {count}" for node, count in sorted(spread.items()))
    return [
        Result("cluster.place.embedded", T_PLACE, f"creates/s, embedded `cloche up` (n={n}, {concurrency} at a time)",
               base, "creates/s", label="embedded"),
        Result("cluster.place.api", T_PLACE, f"creates/s, cluster API over {len(spread)} nodes (n={n}, "
               f"{concurrency} at a time)", rate, "creates/s", baseline="cluster.place.embedded",
               note=f"Where the cluster placed them: {placed}."),
    ]  # fmt: skip
