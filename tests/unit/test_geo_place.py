"""Latency-aware placement and where a request's user is (fleet/geo.py, fleet/where.py,
server/region.py): the scoring, the client-address map, the hint header's validation and
the `cloche-region` answer of an embedded server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cloche.config import Settings
from cloche.fleet import where
from cloche.fleet.scoring import Candidate, fleet_matrix, pick
from cloche.scheduler.errors import NoCapacity, RegionFull
from cloche.scheduler.scorers.latency import LatencyMatrix
from cloche.server.region import RegionMiddleware

MATRIX = LatencyMatrix({("eu", "eu"): 4, ("us", "us"): 4, ("eu", "us"): 80})


def node(node_id: str, region: str, used_mb: float = 0, capacity_mb: float = 4096) -> Candidate:
    return Candidate(node_id, region, used_mb, capacity_mb)


def test_the_users_region_wins_over_an_emptier_node_an_ocean_away() -> None:
    nodes = [node("us-1", "us"), node("eu-1", "eu", used_mb=2048)]
    assert pick(nodes, 512, "eu", (), MATRIX).node_id == "eu-1"
    assert pick(nodes, 512, "us", (), MATRIX).node_id == "us-1"


def test_room_decides_within_a_region_and_without_a_user_region() -> None:
    nodes = [node("eu-1", "eu", used_mb=3000), node("eu-2", "eu", used_mb=1000), node("us-1", "us", used_mb=2000)]
    assert pick(nodes, 512, "eu", (), MATRIX).node_id == "eu-2"
    assert pick(nodes, 512, None, (), MATRIX).node_id == "eu-2"


def test_a_full_region_spills_to_the_next_nearest_with_room() -> None:
    nodes = [node("eu-1", "eu", used_mb=3900), node("us-1", "us", used_mb=3000)]
    assert pick(nodes, 512, "eu", (), MATRIX).node_id == "us-1"


def test_unpinned_overcommits_the_least_used_node_when_none_has_room() -> None:
    nodes = [node("eu-1", "eu", used_mb=4000), node("us-1", "us", used_mb=3900)]
    assert pick(nodes, 512, "eu", (), MATRIX).node_id in ("eu-1", "us-1")
    with pytest.raises(NoCapacity):
        pick([], 512, "eu", (), MATRIX)


def test_a_pinned_sandbox_never_leaves_its_regions() -> None:
    nodes = [node("eu-1", "eu", used_mb=2048), node("us-1", "us")]
    assert pick(nodes, 512, "us", ("eu",), MATRIX).node_id == "eu-1"  # the user is in us: still eu
    full = [node("eu-1", "eu", used_mb=3900), node("us-1", "us")]
    with pytest.raises(RegionFull, match="region eu") as refused:
        pick(full, 512, "us", ("eu",), MATRIX)
    assert refused.value.code == "region_full"
    with pytest.raises(RegionFull, match="region ap, eu"):  # no node there at all
        pick([node("us-1", "us")], 512, None, ("eu", "ap"), MATRIX)


def test_the_fleet_matrix_is_the_configured_one_else_the_default() -> None:
    assert fleet_matrix("eu-us=33").rtt("us", "eu") == 33
    assert {"eu", "us", "ap"} <= fleet_matrix().regions


def test_client_addresses_map_to_the_most_specific_network() -> None:
    clients = where.ClientRegions("10.0.0.0/8=us, 10.1.0.0/16=eu,2001:db8::/32=ap")
    assert clients.region_of("10.1.2.3") == "eu"
    assert clients.region_of("10.2.0.1") == "us"
    assert clients.region_of("2001:db8::1") == "ap"
    assert clients.region_of("192.0.2.1") is None
    assert clients.region_of("not-an-address") is None
    assert clients.regions == {"us", "eu", "ap"}
    for bad in ("10.0.0.0/8", "nonsense=eu", "10.0.0.0/8="):
        with pytest.raises(ValueError, match="client_regions"):
            where.ClientRegions(bad)


def test_the_user_is_the_hint_else_the_map_else_the_replica() -> None:
    clients = where.ClientRegions("10.1.0.0/16=eu")
    known = {"eu", "us"}
    assert where.locate_user("us", "10.1.0.9", clients, "eu", known) == "us"
    assert where.locate_user(None, "10.1.0.9", clients, "us", known) == "eu"
    assert where.locate_user(None, "127.0.0.1", clients, "us", known) == "us"
    assert where.locate_user(None, None, clients, "", known) is None
    with pytest.raises(where.UnknownRegion, match="'mars'"):
        where.locate_user("mars", None, clients, "us", known)


def test_near_overrides_the_users_region_for_a_block_only() -> None:
    with where.enter(where.Where("eu")) as now:
        with where.near("us"):
            assert where.user_region() == "us"
            where.served_in("us")
        assert where.user_region() == "eu" and now.served == "us"
    assert where.user_region() is None


async def _app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    user = where.user_region() or "-"
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": user.encode()})  # type: ignore[operator]


class _State:
    pass


def _request(settings: Settings, headers: dict[str, str], client: tuple[str, int] = ("10.1.0.9", 1)) -> httpx.Response:
    middleware = RegionMiddleware(_app, settings)  # type: ignore[arg-type]

    async def asgi(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        scope["app"] = type("App", (), {"state": _State()})()
        scope["client"] = client
        await middleware(scope, receive, send)  # type: ignore[arg-type]

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(asgi), base_url="http://t") as c:  # type: ignore[arg-type]
            return await c.get("/v1/sandboxes", headers=headers)

    return asyncio.run(go())


def test_the_middleware_resolves_the_user_and_answers_the_region() -> None:
    settings = Settings(region="us", client_regions="10.1.0.0/16=eu")
    hinted = _request(settings, {"cloche-region": "us"})
    assert hinted.text == "us" and hinted.headers["cloche-region"] == "us"  # embedded: the server's region
    assert _request(settings, {}).text == "eu"  # the client's address
    assert _request(settings, {}, client=("127.0.0.1", 1)).text == "us"  # the replica's
    unknown = _request(settings, {"cloche-region": "mars"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_region"
    assert "'mars'" in unknown.json()["error"]["message"]
    assert _request(Settings(), {}).headers["cloche-region"] == "local"
