"""File and archive routes. Bodies stream through the node's file streams in chunks
(never whole in memory), and every path goes through the node's path-safe file access."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cloche.node.api import SandboxFiles
from cloche.node.files import Entry, normalize
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.server.models import DirListing, EntryOut, PathBody, RenameBody, UploadOut, WriteResult

router = APIRouter(prefix="/v1/sandboxes", tags=["files"])
PathParam = Annotated[str, Query(min_length=1, max_length=8192, description="path inside the sandbox")]


async def _fs(request: Request, tenant: CurrentTenant, sandbox_id: str) -> SandboxFiles:
    return await ctx(request).inside.files(tenant, sandbox_id)


def _entry(e: Entry) -> EntryOut:
    return EntryOut(**e.__dict__)


@router.get("/{sandbox_id}/files", responses={200: {"content": {"application/octet-stream": {}},
                                                    "model": DirListing}})  # fmt: skip
async def read_file(sandbox_id: str, path: PathParam, request: Request,
                    tenant: CurrentTenant) -> Response:  # fmt: skip
    """A file's bytes, or for a directory its listing as JSON."""
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(path)
    if await fs.is_dir(path):
        entries = await fs.list(path)
        return JSONResponse(DirListing(path=path, entries=[_entry(e) for e in entries]).model_dump())
    size = await fs.size(path)  # a missing or special file fails here, before the answer starts
    return StreamingResponse(_first(fs.read(path), size), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})  # fmt: skip


async def _first(chunks: AsyncGenerator[bytes], size: int) -> AsyncIterator[bytes]:
    """The file as long as it was when the answer began (a log still being written grows);
    the reader is closed as soon as that much has gone, not left to the garbage collector."""
    left = size
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield chunk[:left]
            left -= len(chunk)
            if left <= 0:
                return


@router.put("/{sandbox_id}/files", response_model=WriteResult)
async def write_file(sandbox_id: str, path: PathParam, request: Request, tenant: CurrentTenant,
                     mode: Annotated[str, Query(pattern=r"^0?[0-7]{3}$")] = "644") -> WriteResult:  # fmt: skip
    """Atomically replace a file with the request body (parent directories are created)."""
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(path)
    await fs.mkdir(path.rpartition("/")[0] or "/")
    size = await fs.write(path, request.stream(), int(mode, 8))
    return WriteResult(path=path, size=size)


@router.delete("/{sandbox_id}/files", status_code=204, response_class=Response)
async def remove_file(sandbox_id: str, path: PathParam, request: Request, tenant: CurrentTenant,
                      recursive: bool = False) -> Response:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    await fs.remove(normalize(path), recursive)
    return Response(status_code=204)


@router.get("/{sandbox_id}/files/stat", response_model=EntryOut)
async def stat_file(sandbox_id: str, path: PathParam, request: Request,
                    tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    return _entry(await fs.stat(normalize(path)))


@router.post("/{sandbox_id}/files/mkdir", response_model=EntryOut)
async def make_dir(sandbox_id: str, body: PathBody, request: Request,
                   tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(body.path)
    await fs.mkdir(path)
    return _entry(await fs.stat(path))


@router.post("/{sandbox_id}/files/rename", response_model=EntryOut)
async def rename(sandbox_id: str, body: RenameBody, request: Request,
                 tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    src, dst = normalize(body.src), normalize(body.dst)
    await fs.rename(src, dst)
    return _entry(await fs.stat(dst))


@router.put("/{sandbox_id}/archive", response_model=UploadOut)
async def upload_archive(sandbox_id: str, path: PathParam, request: Request,
                         tenant: CurrentTenant) -> UploadOut:  # fmt: skip
    """Extract a tar (optionally gzip-compressed) into the directory `path`."""
    fs = await _fs(request, tenant, sandbox_id)
    report = await fs.extract(path, request.stream())
    return UploadOut(**report.__dict__)


@router.get("/{sandbox_id}/archive", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-tar": {}}}})  # fmt: skip
async def download_archive(sandbox_id: str, path: PathParam, request: Request,
                           tenant: CurrentTenant) -> StreamingResponse:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    tar = fs.archive(path)
    first = await anext(tar, b"")  # the path is checked (and the tar begun) before the answer starts
    return StreamingResponse(_prepend(first, tar), media_type="application/x-tar")


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
