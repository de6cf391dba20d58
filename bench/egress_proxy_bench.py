"""Egress proxy benchmark: what injecting a secret adds to an HTTPS request.

One HTTPS origin on loopback (h11, a trustme certificate), one keep-alive client straight
to it and one through the egress proxy, which ends the client's TLS with a leaf of the
node CA, injects `Authorization: Bearer ${secret:API_KEY}` and re-encrypts to the
origin on a connection it keeps open too. Requests alternate between the two clients,
so both paths are measured under the same conditions in the same run; the figure is the
difference (goal: <= 1 ms added per request at p50 and p99) and the ratio. Everything
runs on one event loop and one core, as in the node, first on uvloop (what uvicorn, and
so the node, runs on) and then on the standard asyncio loop. The origin, the client and
the proxy wiring are the unit tests' (tests/unit/test_egress_proxy.py).

`make bench` can list this module in run.MODULES. Alone (it needs neither root nor
the fake internet), printing the figures and writing its marked section of BENCHMARKS.md
(`<!-- egress_proxy_bench: begin -->`, kept by run.py when it rewrites the file):

    .venv/bin/python bench/egress_proxy_bench.py [--output BENCHMARKS.md | --no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trustme
import uvloop

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # tests.unit.test_egress_proxy

from results import Goal, Result, env_int, latency_results, log, percentile  # noqa: E402

T_EGRESS = "Egress proxy: added latency per HTTPS request (secret injected, reused connection)"
TABLES = (T_EGRESS,)
SECTION = "egress_proxy_bench"
KNOBS = [
    ("BENCH_EGRESS_N", "3000", "HTTPS requests per path and event loop"),
    ("BENCH_EGRESS_WARMUP", "300", "requests per path before measuring"),
]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
DESCRIPTIONS = {
    T_EGRESS: "GET on a kept-alive HTTPS connection, direct to a loopback origin vs through the egress "
    "proxy (TLS ended with the node CA's leaf, one header injected from a secret, TLS again to the "
    "origin). Requests alternate between the two paths; 'added' is proxy minus direct at each percentile."
}


async def measure(n: int, warmup: int) -> tuple[list[float], list[float]]:
    """Milliseconds per request: (direct, through the proxy), interleaved."""
    from cloche.node.net.egress.ca import NodeCA
    from tests.unit.test_egress_proxy import API, SECRET, Client, Origin, World

    with tempfile.TemporaryDirectory() as tmp:
        upstream_ca = trustme.CA(organization_name="bench upstream CA")
        cafile = Path(tmp) / "upstream-ca.pem"
        cafile.write_bytes(upstream_ca.cert_pem.bytes())
        world = World(NodeCA.load_or_create(Path(tmp) / "ca", "bench node"), upstream_ca, str(cafile))
        async with Origin(world.origin_tls(API)) as origin, world.proxy(origin.port, tls=True) as proxy:
            direct = await Client.open(origin.port, API, upstream_ca.cert_pem.bytes())
            proxied = await Client.open(proxy.port, API, world.ca.cert_pem)
            paths = ((direct, [("authorization", f"Bearer {SECRET}")]), (proxied, []))
            samples: tuple[list[float], list[float]] = ([], [])
            for i in range(warmup + n):
                for (client, headers), out in zip(paths, samples, strict=True):
                    t0 = time.perf_counter()
                    reply = await client.request(API, "/", headers=headers)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if reply.status != 200:
                        raise RuntimeError(f"request answered {reply.status}: {reply.body[:200]!r}")
                    if i >= warmup:
                        out.append(elapsed)
                origin.requests.clear()
                world.secret_calls.clear()
            await direct.close()
            await proxied.close()
            if proxy.metrics()["requests_transformed"] != warmup + n:
                raise RuntimeError(f"the proxy transformed {proxy.metrics()} requests, not {warmup + n}")
    return samples


def run() -> list[Result]:
    n, warmup = env_int("BENCH_EGRESS_N", 3000), env_int("BENCH_EGRESS_WARMUP", 300)
    out: list[Result] = []
    for name, factory in LOOPS.items():
        log(f"egress proxy: {n} HTTPS requests per path on {name}")
        with asyncio.Runner(loop_factory=factory) as runner:
            direct, proxied = runner.run(measure(n, warmup))
        prefix = f"egress.{name}"
        out += latency_results(f"{prefix}.direct", T_EGRESS, f"direct to the origin ({name})", direct,
                               percentiles=(50, 99), plot="Egress proxy: HTTPS request latency",
                               label=f"direct ({name})")  # fmt: skip
        out += latency_results(f"{prefix}.proxy", T_EGRESS, f"through the egress proxy ({name})", proxied,
                               percentiles=(50, 99), baselines={50: f"{prefix}.direct.p50", 99: f"{prefix}.direct.p99"},
                               plot="Egress proxy: HTTPS request latency", label=f"proxy ({name})")  # fmt: skip
        for p in (50, 99):
            added = percentile(proxied, p) - percentile(direct, p)
            out.append(Result(f"{prefix}.added.p{p}", T_EGRESS, f"added by the proxy, p{p} ({name})", added, "ms",
                              goal=Goal("<=", 1.0)))  # fmt: skip
    return out


def write_section(results: list[Result], wall_s: float, target: Path) -> str:
    """Render this module's table (run.py's renderer) into its marked section of `target`,
    before the plots; the rest of the file is left as it is."""
    import run as runner

    saved = {"descriptions": DESCRIPTIONS, "crashes": [], "conditions": [], "overrides": {}, "knobs": KNOBS,
             "started": datetime.now(UTC).isoformat(), "wall_s": wall_s,
             "machine": runner.machine()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rendered = runner.markdown(saved, results, [], Path(tmp) / "x.md")
    table = rendered[rendered.index(f"## {T_EGRESS}") :].split("\n## ", 1)[0].rstrip("\n")
    title, body = table.split("\n", 1)
    head = (f"_Measured {saved['started'][:16].replace('T', ' ')} UTC by `bench/egress_proxy_bench.py` alone "
            f"(see its docstring), cloche commit {runner.describe_code(runner.code_state(), runner.code_state())}, "
            f"wall time {wall_s / 60:.1f} min; not counted in the Summary above._")  # fmt: skip
    section = f"{title}\n\n{head}\n{body}\n"
    begin, end = f"<!-- {SECTION}: begin -->", f"<!-- {SECTION}: end -->"
    block = f"{begin}\n{section}{end}\n"
    text = target.read_text() if target.exists() else ""
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1].lstrip("\n")
    elif "\n## Plots\n" in text:
        before, after = text.split("\n## Plots\n", 1)
        text = before.rstrip("\n") + "\n\n" + block + "\n## Plots\n" + after
    else:
        text = text.rstrip("\n") + "\n\n" + block
    target.write_text(text)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = run()
    for r in results:
        status = "" if r.goal is None else f"  goal {r.goal.describe(r.unit)}: {r.goal.met(r.value, None)}"
        print(f"{r.metric:45s} {r.value:8.3f} {r.unit}{status}")
    if not args.no_write:
        print(write_section(results, time.perf_counter() - t0, args.output))
        print(f"wrote the {SECTION} section of {args.output}")


if __name__ == "__main__":
    main()
