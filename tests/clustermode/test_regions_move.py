"""Agents between regions, on a real cluster of two regions (eu, us), each with a node
and an S3 bucket of its own: an explicit move keeps the agent's files and state and
copies only the chunks the target's store lacks, an invocation sent during the move is
served after it, a fork placed in the other region starts from its snapshot, an agent
of an app pinned to one region is neither moved nor replicated out of it, an agent
follows its user on its next wake, and an agent whose whole region is lost resumes in
the other from the replica of its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloche.client import Client, Conflict, ServerError
from cloche.cluster.local.process import wait_for
from cloche.examples import memo_app
from cloche.fleet.placements import PlacementTable
from cloche.fleet.sandbox_regions import SandboxRegions
from cloche.store.db import Store
from tests.clustermode.conftest import CLUSTER_ENV, Cluster, running_cluster

TTL = float(CLUSTER_ENV["CLOCHE_LEASE_TTL_S"])
INTERVAL = float(CLUSTER_ENV["CLOCHE_CHECKPOINT_INTERVAL_S"])
FOLLOW = {  # a small rule: 3 requests, 60 % of them from one region, no cooldown
    "CLOCHE_FOLLOW_MIN_REQUESTS": "3",
    "CLOCHE_FOLLOW_THRESHOLD": "0.6",
    "CLOCHE_FOLLOW_COOLDOWN_S": "0",
    "CLOCHE_FOLLOW_WINDOW_S": "600",
}
STATE_CLI = "/.cloche/bin/cloche-state"
OTHER = {"eu": "us", "us": "eu"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(nodes=2, regions=("eu", "us"), env=FOLLOW) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.client(0) as c:
        c.apps.deploy("geo", **memo_app())
        yield c
        c.apps.delete("geo", state=True)


def api(cluster: Cluster, path: str) -> Any:
    r = httpx.get(cluster.url(0) + path, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def region_of(cluster: Cluster, sandbox_id: str) -> str:
    """The region of the node that runs the sandbox ("" when it is on none)."""
    node = api(cluster, f"/v1/sandboxes/{sandbox_id}")["node"]
    regions = {n["id"]: n["region"] for n in api(cluster, "/v1/nodes")["items"]}
    return str(regions.get(node, ""))


def run(client: Client, key: str, command: str, region: str | None = None) -> str:
    """A tool command in the agent's sandbox, through the agent (as its user sends it)."""
    headers = {"cloche-region": region} if region else None
    answer = client.agents("geo")[key].invoke(json={"message": f"run: {command}"}, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["reply"])


def remember(client: Client, key: str) -> tuple[str, str]:
    """Give the agent 3 MB of random bytes in a file and a value in its KV state; their
    digest, and the agent's sandbox."""
    digest = run(client, key, f"head -c 3000000 /dev/urandom > /workspace/blob && {STATE_CLI} put color blue "
                 ">/dev/null && sha256sum /workspace/blob | cut -c1-64").strip()  # fmt: skip
    assert len(digest) == 64
    return digest, client.agents("geo")[key].info().sandbox_id


def recalled(client: Client, key: str) -> str:
    return run(client, key, f"sha256sum /workspace/blob | cut -c1-64; {STATE_CLI} get color")


def test_an_explicit_move_keeps_files_and_state_and_copies_only_what_is_missing(
    cluster: Cluster, client: Client
) -> None:
    digest, sandbox_id = remember(client, "alice")
    source = region_of(cluster, sandbox_id)
    target = OTHER[source]
    moved: dict[str, Any] = {}

    def move() -> None:
        moved["report"] = client.agents("geo")["alice"].move(target)
        moved["done"] = time.monotonic()

    def meanwhile(replica: int) -> None:  # through either replica: it waits, then is served where it went
        with cluster.client(replica) as c:
            asked = time.monotonic()
            try:
                answer = recalled(c, "alice")
            except ServerError as e:
                # both replicas may start the woken agent's server at once (docs/cluster.md
                # Limits): the losing invoke is told to come again, and is served then
                assert e.code == "agent_crashed", e
                answer = recalled(c, "alice")
            answers[replica] = (asked, answer, time.monotonic())

    answers: dict[int, tuple[float, str, float]] = {}
    mover = threading.Thread(target=move)
    mover.start()
    store = Store(cluster.local.postgres.dsn)  # type: ignore[union-attr]
    try:  # parked: off its old node, not yet on the new one
        wait_for("the move under way", lambda: PlacementTable(store).get(sandbox_id).state == "parked", 60, every=0.01)  # type: ignore[union-attr]
    finally:
        store.close()
    requests = [threading.Thread(target=meanwhile, args=(r,)) for r in (0, 1)]
    for t in requests:
        t.start()
    for t in [mover, *requests]:
        t.join()
    report = moved["report"]
    assert (report.source, report.region) == (source, target)
    assert set(answers) == {0, 1}
    for asked, answer, served in answers.values():
        assert asked < moved["done"] <= served and answer.split() == [digest, "blue"]
    assert region_of(cluster, sandbox_id) == target
    assert recalled(client, "alice").split() == [digest, "blue"]

    # the first move copied what the target lacked (the leader's replica may have sent some
    # before); going back, the old store still holds the file's chunks: next to nothing travels
    back = client.agents("geo")["alice"].move(source)
    assert back.region == source and back.bytes_copied < 300_000
    assert region_of(cluster, sandbox_id) == source
    assert recalled(client, "alice").split() == [digest, "blue"]


def test_a_move_is_refused_for_an_unknown_region_or_agent(cluster: Cluster, client: Client) -> None:
    headers = {"Authorization": f"Bearer {cluster.key}"}
    run(client, "dora", "true")
    r = httpx.post(cluster.url(0) + "/v1/apps/geo/agents/dora/move", json={"region": "mars"}, headers=headers)
    assert r.status_code == 400 and "mars" in r.text
    r = httpx.post(cluster.url(0) + "/v1/apps/geo/agents/nobody/move", json={"region": "eu"}, headers=headers)
    assert r.status_code == 404


def moves_counted(cluster: Cluster) -> float:
    """cloche_region_moves_total on replica 0."""
    r = httpx.get(cluster.url(0) + "/metrics", headers={"Authorization": f"Bearer {cluster.key}"}, timeout=30)
    (line,) = [x for x in r.text.splitlines() if x.startswith("cloche_region_moves_total ")]
    return float(line.split()[1])


def test_the_cli_moves_an_agent_and_the_replica_counts_the_move(cluster: Cluster, client: Client) -> None:
    run(client, "frank", "echo kept > /workspace/kept")
    sandbox_id = client.agents("geo")["frank"].info().sandbox_id
    target = OTHER[region_of(cluster, sandbox_id)]
    before = moves_counted(cluster)
    env = {**os.environ, "CLOCHE_URL": cluster.url(0), "CLOCHE_API_KEY": cluster.key}
    done = subprocess.run([sys.executable, "-m", "cloche.cli", "agent", "move", "geo", "frank", "--region", target,
                           "--json"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["region"] == target and region_of(cluster, sandbox_id) == target
    assert moves_counted(cluster) == before + 1
    assert run(client, "frank", "cat /workspace/kept") == "kept\n"


def test_a_fork_placed_in_the_other_region_starts_from_the_copied_snapshot(cluster: Cluster) -> None:
    with cluster.client(0) as c:
        source = c.sandboxes.create()
        forks = []
        try:
            source.files.write("/workspace/notes.txt", b"forked across regions")
            home = region_of(cluster, source.id)
            while not forks or region_of(cluster, forks[-1].id) == home:  # placement spreads them: soon
                assert len(forks) < 4, "no fork was placed in the other region"
                forks.append(source.fork())
            assert forks[-1].files.read("/workspace/notes.txt") == b"forked across regions"
        finally:
            for sb in [source, *forks]:
                sb.kill()


def test_a_pinned_agent_is_neither_moved_nor_replicated_out_of_its_region(cluster: Cluster, client: Client) -> None:
    client.apps.deploy("pinned", **memo_app(), regions=["eu"])
    try:
        agent = client.agents("pinned")["erin"]
        agent.invoke(json={"message": "remember only in eu"}).json()
        sandbox_id = agent.info().sandbox_id
        assert region_of(cluster, sandbox_id) == "eu"
        written = time.time()
        wait_for("a checkpoint", lambda: cluster.local.checkpoint_at(sandbox_id) > written, 20 * INTERVAL)
        time.sleep(3 * INTERVAL)  # more than one full checkpoint and replication pass
        store = Store(cluster.local.postgres.dsn)  # type: ignore[union-attr]
        try:
            assert SandboxRegions(store).get(sandbox_id).replica_region is None
            checkpoint = PlacementTable(store).get(sandbox_id).checkpoint  # type: ignore[union-attr]
        finally:
            store.close()
        s3 = cluster.local.weed.client()  # type: ignore[union-attr]
        s3.head_object(Bucket="cloche-eu", Key=f"cloche/manifests/{checkpoint}")
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket="cloche-us", Key=f"cloche/manifests/{checkpoint}")
        with pytest.raises(Conflict):
            agent.move("us")
        assert region_of(cluster, sandbox_id) == "eu"
    finally:
        client.apps.delete("pinned", state=True)


def test_an_agent_follows_its_user_on_its_next_wake(cluster: Cluster, client: Client) -> None:
    digest, sandbox_id = remember(client, "bob")
    home = region_of(cluster, sandbox_id)
    away = OTHER[home]
    for _ in range(3):  # the user now calls from the other region; awake, the agent stays
        run(client, "bob", "true", region=away)
    assert region_of(cluster, sandbox_id) == home
    client.agents("geo")["bob"].sandbox().hibernate()
    assert recalled(client, "bob").split() == [digest, "blue"]  # no region said: counts for nothing
    answer = run(client, "bob", f"sha256sum /workspace/blob | cut -c1-64; {STATE_CLI} get color", region=away)
    assert answer.split() == [digest, "blue"]
    assert region_of(cluster, sandbox_id) == away


def test_an_agent_whose_region_is_lost_resumes_in_the_other_from_its_replica(cluster: Cluster, client: Client) -> None:
    digest, sandbox_id = remember(client, "carol")
    written = time.time()
    # a change after `written`: the checkpoint that holds the blob may already have been
    # taken (before `written`), and an unchanged sandbox gets no other
    run(client, "carol", "date > /workspace/after")
    regions = SandboxRegions(Store(cluster.local.postgres.dsn))  # type: ignore[union-attr]
    try:
        wait_for("a replica of a checkpoint after the write",
                 lambda: (regions.get(sandbox_id).replica_at or 0) > written, 45 * INTERVAL)  # fmt: skip
        lost = region_of(cluster, sandbox_id)
        replica = regions.get(sandbox_id).replica_region
        assert replica == OTHER[lost]
    finally:
        regions.store.close()
    victims = [n for n in cluster.local.nodes if n.region == lost]
    for node in victims:  # the whole region: every node of it
        os.kill(node.child.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    try:
        wait_for("the region's nodes lost", lambda: {n["region"] for n in api(cluster, "/v1/nodes")["items"]}
                 == {replica}, TTL + 60)  # fmt: skip
        assert recalled(client, "carol").split() == [digest, "blue"]
        assert region_of(cluster, sandbox_id) == replica
    finally:
        for node in victims:
            cluster.restart_node(node.name)
