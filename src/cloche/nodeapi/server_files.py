"""The node API's file routes: one sandbox's files as `SandboxFiles` offers them, with
file and tar bodies streamed both ways (request.stream() in, StreamingResponse out), so
a file of any size crosses the node holding one chunk at a time.

Why apart from server.py: the streaming routes have their own rule — an error must
surface before the first byte (then it is a JSON error), after it the connection is cut.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cloche.node.api import CHUNK, SandboxFiles
from cloche.node.runtime import NodeRuntime
from cloche.nodeapi import wire


async def primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` with its first chunk already read, so an error opening the stream is
    raised here (and answered as JSON), not once the response has started."""
    first = await anext(chunks, None)

    async def rest() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


def routes(rt: NodeRuntime) -> list[BaseRoute]:
    def files(request: Request) -> tuple[SandboxFiles, str]:
        return rt.files(request.path_params["id"]), request.query_params.get("path", "")

    def chunk(request: Request) -> int:
        return min(int(request.query_params.get("chunk", CHUNK)), CHUNK)

    async def read(request: Request) -> Response:
        f, path = files(request)
        op = f.archive if request.path_params["op"] == "archive" else f.read
        stream = op(path, chunk(request))
        return StreamingResponse(await primed(stream), media_type="application/octet-stream")

    async def read_all(request: Request) -> Response:
        f, path = files(request)
        data = await f.read_all(path, int(request.query_params["limit"]))
        return Response(data, media_type="application/octet-stream")

    async def query(request: Request) -> Response:
        f, path = files(request)
        op = request.path_params["op"]
        result: Any
        if op == "size":
            result = await f.size(path)
        elif op == "list":
            result = [wire.dump(e) for e in await f.list(path)]
        elif op == "stat":
            result = wire.dump(await f.stat(path))
        elif op == "is_dir":
            result = await f.is_dir(path)
        elif op == "exists":
            result = await f.exists(path)
        elif op == "info":
            result = wire.dump(await f.info(path))
        elif op == "walk":
            result = [wire.dump(i) for i in await f.walk(path, int(request.query_params["depth"]))]
        else:
            return JSONResponse({"message": "no such file query"}, 404)
        return JSONResponse(result)

    async def upload(request: Request) -> Response:
        f, path = files(request)
        q, op = request.query_params, request.path_params["op"]
        if op == "extract":
            return JSONResponse(wire.dump(await f.extract(path, request.stream())))
        mode = int(q.get("mode", 0o644))
        if op == "write_as":
            return JSONResponse(await f.write_as(path, request.stream(), int(q["uid"]), int(q["gid"]), mode))
        return JSONResponse(await f.write(path, request.stream(), mode))

    async def change(request: Request) -> Response:
        f, path = files(request)
        q, op = request.query_params, request.path_params["op"]
        if op == "mkdir":
            await f.mkdir(path, int(q.get("mode", 0o755)))
        elif op == "mkdir_as":
            await f.mkdir_as(path, int(q["uid"]), int(q["gid"]), int(q.get("mode", 0o755)))
        elif op == "set_metadata":
            await f.set_metadata(path, json.loads(await request.body()))
        elif op == "remove":
            await f.remove(path, q.get("recursive") == "1")
        elif op == "rename":
            await f.rename(path, q["dst"])
        elif op == "symlink":
            await f.symlink(path, q["target"])
        elif op == "hardlink":
            await f.hardlink(path, q["existing"])
        else:
            return JSONResponse({"message": "no such file change"}, 404)
        return JSONResponse(None)

    base = "/v1/sandboxes/{id}/files"
    return [
        Route(base + "/stream/{op}", read),
        Route(base + "/read_all", read_all),
        Route(base + "/query/{op}", query),
        Route(base + "/upload/{op}", upload, methods=["PUT"]),
        Route(base + "/change/{op}", change, methods=["POST"]),
    ]
