"""Time to move a 100 MB agent between two regions (issue #20), on a real `LocalCluster`
of two regions, eu and us, one node each, each with its own bucket on the cluster's
SeaweedFS: `POST /v1/apps/memo/agents/{key}/move` until it answers, and then until
the agent's next invocation is answered in the new region.

Before each trial the agent writes BENCH_REGION_MOVE_MB of fresh random bytes (not
compressible, not in the target's store), so every move hibernates them to its
region's store, copies them to the other region's and resumes there. Each region is a
network namespace of its own with BENCH_REGION_DELAY_MS (one way) added by the relay
between regions (`cloche cluster local --regions ... --inter-region-delay-ms`); the
relay delays node-to-node traffic only, and a move has none: the nodes reach S3, and
the server reaches the nodes and copies between the buckets, undelayed. Run alone:

    .venv/bin/python bench/region_move.py

and it prints the BENCHMARKS.md line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_rig import cluster  # noqa: E402
from results import env_float, env_int, log, percentile  # noqa: E402

from cloche.examples import memo_app  # noqa: E402

AGENT = "/v1/apps/memo/agents/traveller"


def main() -> None:
    n, size_mb = env_int("BENCH_REGION_MOVES", 4), env_int("BENCH_REGION_MOVE_MB", 100)
    delay = env_float("BENCH_REGION_DELAY_MS", 40.0)
    moves, answers, copied = [], [], []
    regions = cluster(nodes=2, regions=("eu", "us"), netns=True, inter_region_delay_ms=delay)
    with regions as rig, rig.client(timeout=600) as http:
        http.put("/v1/apps/memo", json=memo_app()).raise_for_status()
        target = ""
        for i in range(n):
            say = {"message": f"run: head -c {size_mb}M /dev/urandom > /workspace/blob && sync"}
            http.post(f"{AGENT}/invoke", json=say).raise_for_status()
            sid = http.get(AGENT).json()["sandbox_id"]
            nodes = {x["id"]: x["region"] for x in http.get("/v1/nodes").json()["items"]}
            target = {"eu": "us", "us": "eu"}[nodes[rig.node_of(http, sid)]]
            started = time.perf_counter()
            report = http.post(f"{AGENT}/move", json={"region": target}).raise_for_status().json()
            moved = time.perf_counter() - started
            http.post(f"{AGENT}/invoke", json={"message": "hello"}).raise_for_status()
            answered = time.perf_counter() - started
            log(f"region move {i + 1}/{n}: {report['source']} -> {report['region']} in {moved:.2f} s "
                f"{report['phases']} (answered after {answered:.2f} s), "
                f"{report['bytes_copied'] / 1e6:.1f} MB copied")  # fmt: skip
            moves.append(moved)
            answers.append(answered)
            copied.append(report["bytes_copied"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"| move of a {size_mb} MB agent eu <-> us, region namespaces, relay {delay:g} ms one way, n={n} | "
          f"p50 {percentile(moves, 50):.2f} s, max {max(moves):.2f} s | next invoke answered: "
          f"p50 {percentile(answers, 50):.2f} s | copied per move: {min(copied) / 1e6:.0f}-{max(copied) / 1e6:.0f} MB "
          f"| commit {commit} |")  # fmt: skip


if __name__ == "__main__":
    main()
