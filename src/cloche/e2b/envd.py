"""envd's REST routes (`GET /health`, `GET` and `POST /files`) and the Connect RPC
services, all on cloche's own port and routed by the `E2b-Sandbox-Id` header."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cloche.e2b import filesystem, multipart, process
from cloche.e2b.errors import E2bError, e2b_error, envd_answer
from cloche.e2b.fsops import E2bFiles
from cloche.e2b.state import Target, target
from cloche.e2b.users import name_from

router = APIRouter(include_in_schema=False)
CHUNK = 1 << 20
METADATA_HEADER = "x-metadata-"


def _envd(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            response = envd_answer(exc, request.headers.get("e2b-sandbox-id", ""))
            if response is None:
                raise
            return response

    endpoint.__name__ = handler.__name__
    return endpoint


@router.get("/health")
async def health(request: Request) -> Response:
    """204 while the sandbox runs; 502 (the SDK's "not running") when it is gone or asleep."""
    try:
        await target(request, wake=False)
    except E2bError as exc:
        return e2b_error(exc.status, exc.message)
    return Response(status_code=204)


async def _user_fs(request: Request, t: Target) -> E2bFiles:
    return E2bFiles(t.files(), await t.user(name_from(request)))


async def _gzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield z.compress(chunk)
    yield z.flush()


async def download(request: Request) -> Response:
    t = await target(request, operation="read")
    fs = await _user_fs(request, t)
    path = fs.path(request.query_params.get("path", ""))
    if await fs.files.is_dir(path):
        raise E2bError(400, f"path '{path}' is a directory")
    size = await fs.files.size(path)  # FileError here, before the answer starts
    name = path.rpartition("/")[2].replace('"', "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    accept = request.headers.get("accept-encoding", "")
    compress = any(e.strip().split(";")[0] == "gzip" for e in accept.split(","))
    if compress:
        headers["Content-Encoding"] = "gzip"
    else:
        headers["Content-Length"] = str(size)
    body = fs.files.read(path, CHUNK)
    return StreamingResponse(_gzip(body) if compress else body, media_type="application/octet-stream",
                             headers=headers)  # fmt: skip


async def _spool(request: Request, gunzip: bool, limit: int) -> IO[bytes]:
    """The body in a temporary file, gunzipped when asked; the limit applies to the
    decompressed size too (the body-size middleware only sees the compressed bytes)."""
    spool = tempfile.TemporaryFile()
    z = zlib.decompressobj(31) if gunzip else None
    size = 0
    try:
        async for chunk in request.stream():
            if z is not None:
                chunk = z.decompress(chunk, limit + 1 - size)
                if z.unconsumed_tail:
                    raise E2bError(413, f"the decompressed body exceeds {limit} bytes")
            size += len(chunk)
            if size > limit:
                raise E2bError(413, f"the decompressed body exceeds {limit} bytes")
            await asyncio.to_thread(spool.write, chunk)
        if z is not None:
            tail = z.flush()
            if size + len(tail) > limit:
                raise E2bError(413, f"the decompressed body exceeds {limit} bytes")
            await asyncio.to_thread(spool.write, tail)
    except zlib.error as exc:
        spool.close()
        raise E2bError(400, f"invalid gzip body: {exc}") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _metadata(request: Request) -> dict[str, str]:
    return {k[len(METADATA_HEADER) :]: v for k, v in request.headers.items()
            if k.lower().startswith(METADATA_HEADER) and len(k) > len(METADATA_HEADER)}  # fmt: skip


async def _spooled(spool: IO[bytes], start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """Bytes `start` to `end` (the end when None) of the spool, in chunks."""
    await asyncio.to_thread(spool.seek, start)
    left = None if end is None else end - start
    while left is None or left > 0:
        chunk = await asyncio.to_thread(spool.read, CHUNK if left is None else min(CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


async def _written(fs: E2bFiles, path: str, metadata: dict[str, str]) -> dict[str, object]:
    await fs.files.set_metadata(path, metadata)
    info: dict[str, object] = {"name": path.rpartition("/")[2], "type": "file", "path": path}
    if metadata:
        info["metadata"] = {k.lower(): v for k, v in metadata.items()}
    return info


async def upload(request: Request) -> Response:
    t = await target(request, operation="write")
    fs = await _user_fs(request, t)
    content_type = request.headers.get("content-type", "")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise E2bError(400, f"unsupported Content-Encoding {encoding!r}")
    metadata = _metadata(request)
    param_path = request.query_params.get("path")
    spool = await _spool(request, encoding == "gzip", t.c.settings.max_file_bytes)
    with spool:
        if content_type.lower().startswith("multipart/form-data"):
            try:
                parts = await asyncio.to_thread(multipart.parse, spool, multipart.boundary_of(content_type))
            except multipart.MultipartError as exc:
                raise E2bError(400, str(exc)) from None
            files = [p for p in parts if p.filename is not None or p.name == "file"]
            if not files:
                raise E2bError(400, "no file in the multipart body")
            results = []
            for part in files:
                dest = param_path if (param_path and len(files) == 1) else (part.filename or param_path)
                if not dest:
                    raise E2bError(400, "a file needs a path (the path parameter or its filename)")
                path = fs.path(dest)
                await fs.write_file(path, _spooled(spool, part.start, part.end))
                results.append(await _written(fs, path, metadata))
            return JSONResponse(results)
        if not param_path:
            raise E2bError(400, "the path parameter is required")
        path = fs.path(param_path)
        await fs.write_file(path, _spooled(spool))
        return JSONResponse([await _written(fs, path, metadata)])


router.add_api_route("/files", _envd(download), methods=["GET"])
router.add_api_route("/files", _envd(upload), methods=["POST"])

for _name, _handler in process.METHODS.items():
    router.add_api_route(f"/process.Process/{_name}", _handler, methods=["POST"])
for _name, _handler in filesystem.METHODS.items():
    router.add_api_route(f"/filesystem.Filesystem/{_name}", _handler, methods=["POST"])
