"""A sandbox's envd home on a real etcd, and the forwarding between replicas over real
HTTP: the first replica to ask becomes the home, the others learn it; a restarted home
takes its old claim back at once; a closed home's claim goes and the next asker takes
it; a stopped sandbox's home is released; a forward streams both ways; and a forwarded
request is served where it lands, so even replicas that disagree about the home never
pass a request round in a loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloche.cluster.etcd import Etcd
from cloche.cluster.local.etcd import EtcdServer
from cloche.cluster.session import Session
from cloche.config import Settings
from cloche.e2b.home import PREFIX, Homes
from cloche.server.affinity import EnvdAffinity
from tests.cluster.timing import MARGIN, TTL

SANDBOX = {"E2b-Sandbox-Id": "sb_1"}
INVERT = bytes(255 - i for i in range(256))


def test_the_first_asker_is_home_and_a_restarted_home_takes_its_claim_back(etcd_server: EtcdServer,
                                                                           prefix: str) -> None:  # fmt: skip
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd:
            a = Homes(etcd, "http://a", ttl=TTL, margin=MARGIN)
            b = Homes(etcd, "http://b", ttl=TTL, margin=MARGIN)
            first = await a.home("sb_1")
            assert first.mine and first.url == "http://a"
            seen = await b.home("sb_1")
            assert (seen.url, seen.mine) == ("http://a", False)
            assert (await a.home("sb_1")).mine, "the home stays the home"
            a_again = Homes(etcd, "http://a", ttl=TTL, margin=MARGIN)  # a restarted: its processes are gone
            taken = await a_again.home("sb_1")
            assert taken.mine and taken.create_revision > first.create_revision
            await a_again.close()  # revokes the lease: the claim goes at once
            assert await b.vacated("sb_1", taken)
            now = await b.home("sb_1")
            assert (now.url, now.mine) == ("http://b", True)
            await a.release("sb_1")  # not a's: left alone
            assert (await etcd.get(PREFIX + "sb_1")) is not None
            await b.release("sb_1")  # the sandbox stopped: no key is left behind
            assert (await etcd.get(PREFIX + "sb_1")) is None
            await asyncio.gather(a.close(), b.close())

    asyncio.run(main())


def _app(name: str, homes: Homes, served: list[str]) -> Starlette:
    async def who(request: Request) -> Response:
        served.append(name)
        return JSONResponse({"served_by": name, "forwarded_by": request.headers.get("cloche-forwarded-by")})

    async def echo(request: Request) -> Response:
        got = await request.body()  # whole: a StreamingResponse would race the upload for its messages

        async def back() -> AsyncIterator[bytes]:
            for i in range(0, len(got), 65536):
                yield got[i : i + 65536].translate(INVERT)

        return StreamingResponse(back(), headers={"x-served-by": name})

    async def ticks(request: Request) -> Response:
        async def forever() -> AsyncIterator[bytes]:
            yield b"first\n"
            await asyncio.sleep(3600)

        return StreamingResponse(forever())

    app = Starlette(routes=[Route("/who", who), Route("/echo", echo, methods=["POST"]), Route("/ticks", ticks)],
                    middleware=[Middleware(EnvdAffinity)])  # fmt: skip
    app.state.envd_homes = homes
    return app


async def _serving(apps: list[Starlette], body: Callable[[list[str]], Awaitable[None]]) -> None:
    servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) for app in apps]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        await asyncio.sleep(0.05)
    urls = [f"http://127.0.0.1:{s.servers[0].sockets[0].getsockname()[1]}" for s in servers]
    try:
        await body(urls)
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)


def test_a_forward_streams_both_ways_and_is_never_forwarded_again(etcd_server: EtcdServer, prefix: str) -> None:
    async def main() -> None:
        async with Etcd(etcd_server.endpoint, prefix=prefix) as etcd:
            # both replicas misconfigured (advertising a URL that is neither): each sees the
            # other's address as the home, the worst case for a loop
            a, b = (Homes(etcd, "http://wrong", ttl=TTL, margin=MARGIN) for _ in range(2))
            served: list[str] = []

            async def body(urls: list[str]) -> None:
                async with Session(etcd, ttl=TTL, margin=MARGIN) as other:
                    await etcd.put(PREFIX + "sb_1", urls[0].encode(), lease=other.lease)
                    async with httpx.AsyncClient(timeout=10) as http:
                        got = (await http.get(urls[1] + "/who", headers=SANDBOX)).json()
                        assert got == {"served_by": "a", "forwarded_by": "http://wrong"}
                        assert served == ["a"], "forwarded once, served once"
                        direct = (await http.get(urls[0] + "/who", headers=SANDBOX)).json()
                        assert direct["served_by"] == "a" and served == ["a", "a"]
                        assert (await http.get(urls[1] + "/who")).json()["served_by"] == "b", "not in-sandbox"

                        async def upload() -> AsyncIterator[bytes]:
                            for i in range(50):
                                yield bytes([i]) * 65536

                        r = await http.post(urls[1] + "/echo", headers=SANDBOX, content=upload())
                        assert r.headers["x-served-by"] == "a"
                        assert r.content == b"".join(bytes([255 - i]) * 65536 for i in range(50))

                        async with http.stream("GET", urls[1] + "/ticks", headers=SANDBOX) as stream:
                            lines = stream.aiter_lines()
                            assert await asyncio.wait_for(anext(lines), 5) == "first", "relayed as it comes"

            await _serving([_app("a", a, served), _app("b", b, served)], body)
            await asyncio.gather(a.close(), b.close())

    asyncio.run(main())


def test_a_replica_advertises_its_listen_address_unless_told_otherwise() -> None:
    assert Settings(host="10.1.2.3", port=8787).advertise_url == "http://10.1.2.3:8787"
    assert Settings(host="10.1.2.3", advertise="http://api-1.internal:80").advertise_url == "http://api-1.internal:80"
    wildcard = Settings(host="0.0.0.0", port=8787).advertise_url  # in a container: the address its name has
    assert wildcard == f"http://{socket.gethostbyname(socket.gethostname())}:8787" and "0.0.0.0" not in wildcard
