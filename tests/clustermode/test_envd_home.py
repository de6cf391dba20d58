"""A sandbox's envd calls on a cluster, whichever replica they reach: a command started
through one replica is fed, listed, attached to and killed through the other (both
forward to the sandbox's home replica, whose claim goes when the sandbox does), and when
the home replica dies the next call claims a new home and works (the commands died with
the old home, as with envd)."""

from __future__ import annotations

import asyncio

import pytest
from e2b import CommandExitException, Sandbox

from cloche.cluster.etcd import Etcd
from cloche.cluster.local.process import wait_for
from cloche.e2b.home import PREFIX
from tests.clustermode.conftest import Cluster, ClusterServer


@pytest.fixture(scope="module")
def cluster(isolated_cluster: Cluster) -> Cluster:
    """A replica is killed here: a cluster of this module's own."""
    return isolated_cluster


@pytest.fixture(scope="module")
def key(cluster: Cluster) -> str:
    return ClusterServer(cluster).tenant()[1]


def through(cluster: Cluster, key: str, replica: int, sandbox_id: str) -> Sandbox:
    """The sandbox as the E2B SDK sees it with every call going to `replica`."""
    url = cluster.url(replica)
    return Sandbox.connect(sandbox_id, api_url=url, sandbox_url=url, api_key=key)


def holder(cluster: Cluster, sandbox_id: str) -> str:
    """The URL etcd names as the sandbox's envd home ("" when it has none)."""

    async def held() -> str:
        async with Etcd(cluster.local.etcd.endpoint) as etcd:  # type: ignore[union-attr]
            entry = await etcd.get(PREFIX + sandbox_id)
        return entry.value.decode() if entry is not None else ""

    return asyncio.run(held())


def home_of(cluster: Cluster, sandbox_id: str) -> int:
    """Which replica is the sandbox's envd home."""
    return [cluster.url(i) for i in range(2)].index(holder(cluster, sandbox_id))


def test_a_command_started_on_one_replica_is_reached_through_the_other(cluster: Cluster, key: str) -> None:
    url = cluster.url(0)
    with Sandbox.create(timeout=300, api_url=url, sandbox_url=url, api_key=key) as first:
        cat = first.commands.run("cat", background=True, stdin=True)
        other = through(cluster, key, 1, first.sandbox_id)
        assert cat.pid in {p.pid for p in other.commands.list()}
        other.commands.send_stdin(cat.pid, "via the other replica\n")
        other.commands.close_stdin(cat.pid)
        assert cat.wait().stdout == "via the other replica\n"

        ticks = first.commands.run("for i in 1 2 3; do echo t$i; sleep 0.2; done", background=True)
        ticks.disconnect()
        assert "t3\n" in other.commands.connect(ticks.pid).wait().stdout

        sleeper = first.commands.run("sleep 300", background=True)
        assert other.commands.kill(sleeper.pid) is True
        with pytest.raises(CommandExitException):
            sleeper.wait()
        assert sleeper.pid not in {p.pid for p in first.commands.list()}
    wait_for("the killed sandbox's home released", lambda: holder(cluster, first.sandbox_id) == "", 30)


def test_when_the_home_replica_dies_the_next_call_claims_a_new_home(cluster: Cluster, key: str) -> None:
    url = cluster.url(0)
    with Sandbox.create(timeout=300, api_url=url, sandbox_url=url, api_key=key) as sandbox:
        sleeper = sandbox.commands.run("sleep 300", background=True)
        home = home_of(cluster, sandbox.sandbox_id)
        other = 1 - home
        cluster.local.replicas[home].child.kill()  # type: ignore[union-attr]
        try:
            survivor = through(cluster, key, other, sandbox.sandbox_id)
            assert survivor.commands.run("echo at the new home").stdout == "at the new home\n"
            assert home_of(cluster, sandbox.sandbox_id) == other
            assert sleeper.pid not in {p.pid for p in survivor.commands.list()}, "it died with its home"
        finally:
            cluster.restart_replica(home)
        restarted = through(cluster, key, home, sandbox.sandbox_id)  # forwards to the new home
        assert restarted.commands.run("echo forwarded").stdout == "forwarded\n"
        assert home_of(cluster, sandbox.sandbox_id) == other
