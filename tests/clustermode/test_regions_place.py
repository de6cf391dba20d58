"""Regions on a real cluster (four nodes: eu, us, eu, us; both replicas in us): a user's
sandbox and agent land in the user's region and every answer says where it was served
(`cloche-region`); an app pinned to a region never leaves it, not when its user is
elsewhere, not when the region is full (503 region_full), and not when its node dies
(it resumes only on another node of its region), nor when its node is drained (it waits
in the store for room in its region)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloche.cluster.local.process import wait_for
from cloche.examples import memo_app
from tests.clustermode.conftest import CLUSTER_ENV, Cluster, running_cluster
from tests.clustermode.test_cluster import _undrain

TTL = float(CLUSTER_ENV["CLOCHE_LEASE_TTL_S"])
INTERVAL = float(CLUSTER_ENV["CLOCHE_CHECKPOINT_INTERVAL_S"])
EU, US = {"node-1", "node-3"}, {"node-2", "node-4"}
# The replicas' scheduler sees the cluster as one node of the host's memory: room for the
# large pinned agents below, so that the fleet's own placement is what refuses them.
ENV = {"CLOCHE_REGION": "us", "CLOCHE_NODE_MEMORY_MB": str(1 << 20), "CLOCHE_MAX_MEMORY_MB": str(1 << 20)}


@pytest.fixture(scope="module")
def geo() -> Iterator[Cluster]:
    with running_cluster(nodes=4, regions=("eu", "us"), env=ENV) as c:
        wait_for("four nodes listed", lambda: len(_api(c, "GET", "/v1/nodes").json()["items"]) == 4, 60)
        yield c


def _api(cluster: Cluster, method: str, path: str, region: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {cluster.key}", **({"cloche-region": region} if region else {})}
    return httpx.request(method, cluster.url(0) + path, headers=headers, timeout=120, **kw)


def _invoke(cluster: Cluster, app: str, key: str, message: str, region: str | None) -> httpx.Response:
    return _api(cluster, "POST", f"/v1/apps/{app}/agents/{key}/invoke", region, json={"message": message})


def _capacity(cluster: Cluster) -> int:
    """The memory of the smallest node (the test nodes share one host)."""
    return int(min(n["capacity"]["memory_mb"] for n in _api(cluster, "GET", "/v1/nodes").json()["items"]))


def _large(cluster: Cluster) -> int:
    """A memory limit of which one node holds one sandbox, not two."""
    return int(_capacity(cluster) * 0.6)


def test_a_user_lands_in_their_region_and_is_told_where(geo: Cluster) -> None:
    made = _api(geo, "POST", "/v1/sandboxes", "eu", json={})
    assert made.status_code == 201, made.text
    view = made.json()
    try:
        assert made.headers["cloche-region"] == "eu"
        assert view["node"] in EU and view["region"] == view["home_region"] == "eu"
        ran = _api(geo, "POST", f"/v1/sandboxes/{view['id']}/exec", json={"cmd": "echo hi"})  # no hint: still eu
        assert ran.json()["stdout"] == "hi\n" and ran.headers["cloche-region"] == "eu"
    finally:
        _api(geo, "DELETE", f"/v1/sandboxes/{view['id']}")
    local = _api(geo, "POST", "/v1/sandboxes", json={})  # no hint: the receiving replica's region
    assert local.headers["cloche-region"] == "us" and local.json()["node"] in US
    _api(geo, "DELETE", f"/v1/sandboxes/{local.json()['id']}")
    unknown = _api(geo, "POST", "/v1/sandboxes", "mars", json={})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_region"
    assert "'mars'" in unknown.json()["error"]["message"]

    assert _api(geo, "PUT", "/v1/apps/roaming", json=memo_app()).status_code == 200
    try:
        answer = _invoke(geo, "roaming", "alice", "hello", "eu")
        assert answer.status_code == 200 and answer.headers["cloche-region"] == "eu"
        agent = _api(geo, "GET", "/v1/apps/roaming/agents/alice").json()
        assert agent["home_region"] == agent["region"] == "eu" and agent["node"] in EU
    finally:
        _api(geo, "DELETE", "/v1/apps/roaming")


def test_a_pinned_app_never_leaves_its_region_even_when_full_or_its_node_dies(geo: Cluster) -> None:
    large = _large(geo)
    deployed = _api(geo, "PUT", "/v1/apps/resident", json=memo_app(memory_mb=large, regions=["eu"]))
    assert deployed.status_code == 200 and deployed.json()["spec"]["regions"] == ["eu"]
    victim = ""
    try:
        for key in ("a", "b"):  # its users are in us: the app's data is not
            answer = _invoke(geo, "resident", key, "remember the cat is called Tom", "us")
            assert answer.status_code == 200, answer.text
            assert answer.headers["cloche-region"] == "eu"
        nodes = {_api(geo, "GET", f"/v1/apps/resident/agents/{k}").json()["node"] for k in ("a", "b")}
        assert nodes == EU  # one on each: each node has room for one

        full = _invoke(geo, "resident", "c", "hello", "us")
        assert full.status_code == 503 and full.json()["error"]["code"] == "region_full"
        assert "region eu" in full.json()["error"]["message"]
        direct = _api(geo, "POST", "/v1/sandboxes", "us", json={"memory_mb": large, "regions": ["eu"]})
        assert direct.status_code == 503 and direct.json()["error"]["code"] == "region_full"
        elsewhere = _api(geo, "POST", "/v1/sandboxes", "eu", json={"regions": ["us"]})  # the pin beats the user
        assert elsewhere.json()["node"] in US and elsewhere.json()["regions"] == ["us"]
        _api(geo, "DELETE", f"/v1/sandboxes/{elsewhere.json()['id']}")
        with geo.client(0) as c, c.sandboxes.create(regions=["eu"], memory_mb=512) as pinned:  # user: us (the replica)
            assert pinned.info.regions == ["eu"] and pinned.info.region == "eu"

        # a's node dies: a resumes from its checkpoint, only in eu; b fills eu's other node
        a = _api(geo, "GET", "/v1/apps/resident/agents/a").json()
        # a checkpoint taken after Tom was written: one may already have been taken between
        # a's start and the write, so a change after `written` makes sure another comes
        written = time.time()
        assert _invoke(geo, "resident", "a", "hello", "us").status_code == 200
        wait_for("a checkpoint of a after the write", lambda: geo.local.checkpoint_at(a["sandbox_id"]) > written,
                 10 * INTERVAL)  # fmt: skip
        victim = a["node"]
        os.kill(geo.node(victim).child.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        wait_for("a's node lost", lambda: _api(geo, "GET", f"/v1/sandboxes/{a['sandbox_id']}").json()["node"] == "",
                 TTL + 30)  # fmt: skip
        refused = _invoke(geo, "resident", "a", "recall", "us")  # us has room; eu has none
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "region_full"
        assert _api(geo, "GET", f"/v1/sandboxes/{a['sandbox_id']}").json()["node"] == ""
        assert _api(geo, "DELETE", "/v1/apps/resident/agents/b").status_code == 204
        recalled = _invoke(geo, "resident", "a", "recall", "us")
        assert recalled.status_code == 200 and "Tom" in recalled.text
        assert recalled.headers["cloche-region"] == "eu"
        back = _api(geo, "GET", "/v1/apps/resident/agents/a").json()
        assert back["node"] in EU - {victim} and back["home_region"] == "eu"
    finally:
        if victim:
            geo.restart_node(victim)
        _api(geo, "DELETE", "/v1/apps/resident")


def test_a_drain_parks_a_pinned_sandbox_rather_than_move_it_out_of_its_region(geo: Cluster) -> None:
    wait_for("four nodes listed", lambda: len(_api(geo, "GET", "/v1/nodes").json()["items"]) == 4, 120)
    small = _api(geo, "POST", "/v1/sandboxes", json={"regions": ["eu"], "memory_mb": 512}).json()
    target = small["node"]
    assert target in EU
    full = _api(geo, "POST", "/v1/sandboxes", json={"regions": ["eu"], "memory_mb": _capacity(geo) - 256}).json()
    assert full["node"] == (EU - {target}).pop()  # eu's other node: no room left there for the small one
    try:
        drain = subprocess.run(
            [sys.executable, "-m", "cloche.cli", "node", "drain", "--etcd", geo.local.etcd.endpoint,  # type: ignore[union-attr]
             "--node-id", target, "--timeout-s", "120"], capture_output=True, text=True, timeout=180)  # fmt: skip
        assert drain.returncode == 0, drain.stderr
        got = _api(geo, "GET", f"/v1/sandboxes/{small['id']}")
        assert got.status_code == 200, got.text
        parked = got.json()
        assert parked["node"] == "" and parked["state"] == "hibernated"  # not in us, where there is room
        _api(geo, "DELETE", f"/v1/sandboxes/{full['id']}")
        ran = _api(geo, "POST", f"/v1/sandboxes/{small['id']}/exec", "us", json={"cmd": "echo back"})
        assert ran.status_code == 200 and ran.json()["stdout"] == "back\n", ran.text
        assert ran.headers["cloche-region"] == "eu"
        assert _api(geo, "GET", f"/v1/sandboxes/{small['id']}").json()["node"] == full["node"]
    finally:
        asyncio.run(_undrain(geo, target))
        for sandbox in (small, full):
            _api(geo, "DELETE", f"/v1/sandboxes/{sandbox['id']}")
