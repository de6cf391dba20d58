"""The node API's HTTP side: every plain-data method of the `Node` interface as a JSON
route over a `NodeRuntime`, the node's errors as JSON naming their class, and the app
that puts these routes, the file routes, the WebSockets and the credential check together.

Why it exists: it is the only way a control plane on another machine reaches a node;
`client.RemoteNode` speaks exactly these routes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloche.node.errors import RuntimeFailure, SandboxNotFound, TemplateNotFound
from cloche.node.net.policy import NetworkPolicy
from cloche.node.protocol import ExecRequest
from cloche.node.records import SandboxRecord
from cloche.node.runtime import NodeRuntime
from cloche.node.spec import Limits, SandboxSpec
from cloche.nodeapi import server_files, server_streams, wire
from cloche.nodeapi.auth import HEALTHZ, BearerAuth, Credentials
from cloche.nodeapi.instances import InstanceGuard

Handler = Callable[[Request], Awaitable[Response]]
SERVING = ("start", "wake", "resume")  # actions after which the sandbox serves: claimed first


def ok(data: Any = None) -> JSONResponse:
    return JSONResponse(data)


def node_error(exc: RuntimeFailure) -> JSONResponse:
    status = 404 if isinstance(exc, SandboxNotFound | TemplateNotFound) else 409
    return JSONResponse(wire.error_body(exc), status, headers={wire.ERROR_HEADER: "1"})


async def _on_node_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RuntimeFailure)
    return node_error(exc)


async def body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    return json.loads(raw) if raw else {}


def _routes(rt: NodeRuntime, guard: InstanceGuard | None) -> list[BaseRoute]:
    """Closures over the runtime: one per method (the id comes from the path). In a
    cluster, `guard` claims a sandbox before the node starts serving it."""

    async def claim(sandbox_id: str) -> None:
        if guard is not None:
            await guard.hold(sandbox_id)

    async def claimed(rec: SandboxRecord) -> SandboxRecord:
        """A sandbox this node just made (a new id): claim it before anyone is told of it;
        one that cannot be claimed (etcd or PostgreSQL out of reach) is not kept."""
        try:
            await claim(rec.id)
        except BaseException:
            await rt.kill(rec.id)
            raise
        return rec

    async def healthz(request: Request) -> Response:
        return ok({"status": "ok"})

    async def info(request: Request) -> Response:
        return ok({"key": rt.key, "default_isolation": rt.default_isolation, "networking": rt.networking,
                   "capacity": rt.capacity(), "fences": guard.fences if guard else 0})  # fmt: skip

    async def records(request: Request) -> Response:
        found = rt.all_records() if request.query_params.get("all") else rt.list()
        return ok([wire.dump(r) for r in found])

    async def record(request: Request) -> Response:
        return ok(wire.dump(rt.get(request.path_params["id"])))

    async def create(request: Request) -> Response:
        b = await body(request)
        rec = await rt.create(wire.load(SandboxSpec, b["spec"]), use_pool=b.get("use_pool", True),
                              snapshot=b.get("snapshot"))  # fmt: skip
        return ok(wire.dump(await claimed(rec)))

    async def adopt(request: Request) -> Response:
        b = await body(request)
        lost = wire.load(SandboxRecord, b["record"])
        await claim(lost.id)
        return ok(wire.dump(await rt.adopt(lost, b["snapshot"])))

    async def kill(request: Request) -> Response:
        await rt.kill(request.path_params["id"])
        return ok()

    async def action(request: Request) -> Response:
        """Every sandbox method that takes the id and returns its record."""
        sid, b = request.path_params["id"], await body(request)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "stop": lambda: rt.stop(sid),
            "start": lambda: rt.start_sandbox(sid),
            "wake": lambda: rt.wake(sid),
            "hibernate": lambda: rt.hibernate(sid, b.get("keep_local", True)),
            "fork": lambda: rt.fork(sid, wire.load(SandboxSpec, b["spec"]) if b.get("spec") else None),
            "pause": lambda: rt.pause(sid),
            "resume": lambda: rt.resume(sid),
            "network": lambda: rt.set_network(sid, wire.load(NetworkPolicy, b["policy"])),
            "timeout": lambda: rt.set_timeout(sid, b.get("timeout_s")),
            "env": lambda: rt.set_env(sid, b["env"]),
            "resize": lambda: rt.resize(sid, wire.load(Limits, b["limits"])),
        }
        name = request.path_params["action"]
        call = calls.get(name)
        if call is None:
            return JSONResponse({"message": "no such action"}, 404)
        if name in SERVING:
            await claim(sid)
        rec = await call()
        return ok(wire.dump(await claimed(rec) if name == "fork" else rec))

    async def touch(request: Request) -> Response:
        rt.touch(request.path_params["id"])
        return ok()

    async def snapshot(request: Request) -> Response:
        return ok({"manifest": await rt.snapshot(request.path_params["id"])})

    async def exec_(request: Request) -> Response:
        req = wire.load(ExecRequest, (await body(request))["request"])
        return ok(wire.dump(await rt.exec(request.path_params["id"], req)))

    async def signal(request: Request) -> Response:
        b = await body(request)
        return ok({"errno": await rt.signal(request.path_params["id"], b["pid"], b["signo"])})

    async def usage(request: Request) -> Response:
        return ok(wire.dump(rt.usage(request.path_params["id"])))

    async def disk(request: Request) -> Response:
        return ok(wire.dump(rt.disk_usage(request.path_params["id"])))

    async def net_stats(request: Request) -> Response:
        return ok(rt.network_stats(request.path_params["id"]))

    async def host_tail(request: Request) -> Response:
        data = rt.host_file_tail(request.path_params["id"], request.path_params["name"],
                                 int(request.query_params["nbytes"]))  # fmt: skip
        return Response(data, media_type="application/octet-stream")

    async def host_remove(request: Request) -> Response:
        rt.remove_host_file(request.path_params["id"], request.path_params["name"])
        return ok()

    async def snapshot_bytes(request: Request) -> Response:
        return ok({"bytes": rt.snapshot_bytes(request.path_params["manifest"])})

    async def check_network(request: Request) -> Response:
        await rt.check_network(wire.load(NetworkPolicy, (await body(request))["policy"]))
        return ok()

    async def counters(request: Request) -> Response:
        return ok({sid: wire.dump(c) for sid, c in rt.network_counters().items()})

    async def pool(request: Request) -> Response:
        if request.method == "PUT":
            rt.set_pool_size((await body(request))["size"])
        return ok(wire.dump(rt.pool_status()))

    async def templates(request: Request) -> Response:
        return ok(rt.template_names())

    async def template(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            rt.delete_template(name)
            return ok()
        if request.method == "PUT":
            on_base = request.query_params.get("on_base") == "1"
            return ok(wire.dump(await rt.import_template(name, request.stream(), on_base)))
        return ok(wire.dump(rt.template(name)))

    async def gc(request: Request) -> Response:
        return ok(wire.dump(rt.collect_garbage((await body(request)).get("grace_s", 300.0))))

    sb = "/v1/sandboxes/{id}"
    return [
        Route(HEALTHZ, healthz),
        Route("/v1/info", info),
        Route("/v1/sandboxes", records),
        Route("/v1/sandboxes", create, methods=["POST"]),
        Route("/v1/adopt", adopt, methods=["POST"]),
        Route(sb, record),
        Route(sb, kill, methods=["DELETE"]),
        Route(sb + "/touch", touch, methods=["POST"]),
        Route(sb + "/snapshot", snapshot, methods=["POST"]),
        Route(sb + "/exec", exec_, methods=["POST"]),
        Route(sb + "/signal", signal, methods=["POST"]),
        Route(sb + "/usage", usage),
        Route(sb + "/disk", disk),
        Route(sb + "/network-stats", net_stats),
        Route(sb + "/host/{name}", host_tail),
        Route(sb + "/host/{name}", host_remove, methods=["DELETE"]),
        Route(sb + "/{action}", action, methods=["POST"]),
        Route("/v1/snapshots/{manifest}/bytes", snapshot_bytes),
        Route("/v1/network/check", check_network, methods=["POST"]),
        Route("/v1/network/counters", counters),
        Route("/v1/pool", pool, methods=["GET", "PUT"]),
        Route("/v1/templates", templates),
        Route("/v1/templates/{name}", template, methods=["GET", "PUT", "DELETE"]),
        Route("/v1/gc", gc, methods=["POST"]),
    ]


def create_app(rt: NodeRuntime, credentials: Credentials, on_shutdown: str = "hibernate",
               guard: InstanceGuard | None = None) -> BearerAuth:  # fmt: skip
    """The node API over `rt`, behind the credential check. The app owns the runtime's
    life: started with the server; at shutdown the live sandboxes are hibernated (their
    files kept for the next start) or, with on_shutdown="kill", every user sandbox is
    killed, stopped ones too, so nothing is left on the host."""
    hub = server_streams.EventHub(rt)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        hub.start()
        try:
            yield
        finally:
            await hub.close()
            await rt.shutdown(on_shutdown, forced=lambda: False)
            if on_shutdown == "kill":
                for rec in rt.list():  # stopped and hibernated ones too
                    await rt.kill(rec.id)
            await rt.close()

    app = Starlette(routes=[*_routes(rt, guard), *server_files.routes(rt), *server_streams.routes(rt, hub)],
                    exception_handlers={RuntimeFailure: _on_node_error}, lifespan=lifespan)  # fmt: skip
    return BearerAuth(app, credentials)
