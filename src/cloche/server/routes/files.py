"""File and archive routes. Bodies are spooled to a temporary file as they arrive, so
memory stays bounded, and every path goes through the path-safe SandboxFS."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cloche.node import archive
from cloche.node.files import Entry, SandboxFS, normalize
from cloche.server.auth import CurrentTenant
from cloche.server.context import ctx
from cloche.server.models import DirListing, EntryOut, PathBody, RenameBody, UploadOut, WriteResult

router = APIRouter(prefix="/v1/sandboxes", tags=["files"])
PathParam = Annotated[str, Query(min_length=1, max_length=8192, description="path inside the sandbox")]
CHUNK = 1 << 20


async def _fs(request: Request, tenant: CurrentTenant, sandbox_id: str) -> SandboxFS:
    c = ctx(request)
    await c.sandboxes.running(tenant, sandbox_id)
    return c.runtime.fs(sandbox_id)


def _entry(e: Entry) -> EntryOut:
    return EntryOut(**e.__dict__)


async def _spool(request: Request) -> IO[bytes]:
    spool = tempfile.TemporaryFile()
    async for chunk in request.stream():
        await asyncio.to_thread(spool.write, chunk)
    spool.seek(0)
    return spool


async def stream_file(f: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


@router.get("/{sandbox_id}/files", responses={200: {"content": {"application/octet-stream": {}},
                                                    "model": DirListing}})  # fmt: skip
async def read_file(sandbox_id: str, path: PathParam, request: Request,
                    tenant: CurrentTenant) -> Response:  # fmt: skip
    """A file's bytes, or for a directory its listing as JSON."""
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(path)
    if await asyncio.to_thread(fs.is_dir, path):
        entries = await asyncio.to_thread(fs.list, path)
        return JSONResponse(DirListing(path=path, entries=[_entry(e) for e in entries]).model_dump())
    fd = await asyncio.to_thread(fs.open_read, path)
    size = os.fstat(fd).st_size
    return StreamingResponse(stream_file(os.fdopen(fd, "rb")), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})  # fmt: skip


@router.put("/{sandbox_id}/files", response_model=WriteResult)
async def write_file(sandbox_id: str, path: PathParam, request: Request, tenant: CurrentTenant,
                     mode: Annotated[str, Query(pattern=r"^0?[0-7]{3}$")] = "644") -> WriteResult:  # fmt: skip
    """Atomically replace a file with the request body (parent directories are created)."""
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(path)
    spool = await _spool(request)
    with spool:
        parent = path.rpartition("/")[0] or "/"
        await asyncio.to_thread(fs.mkdir, parent)
        size = await asyncio.to_thread(fs.write_chunks, path, iter(lambda: spool.read(CHUNK), b""),
                                       int(mode, 8))  # fmt: skip
    return WriteResult(path=path, size=size)


@router.delete("/{sandbox_id}/files", status_code=204, response_class=Response)
async def remove_file(sandbox_id: str, path: PathParam, request: Request, tenant: CurrentTenant,
                      recursive: bool = False) -> Response:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    await asyncio.to_thread(fs.remove, normalize(path), recursive)
    return Response(status_code=204)


@router.get("/{sandbox_id}/files/stat", response_model=EntryOut)
async def stat_file(sandbox_id: str, path: PathParam, request: Request,
                    tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    return _entry(await asyncio.to_thread(fs.stat, normalize(path)))


@router.post("/{sandbox_id}/files/mkdir", response_model=EntryOut)
async def make_dir(sandbox_id: str, body: PathBody, request: Request,
                   tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    path = normalize(body.path)
    await asyncio.to_thread(fs.mkdir, path)
    return _entry(await asyncio.to_thread(fs.stat, path))


@router.post("/{sandbox_id}/files/rename", response_model=EntryOut)
async def rename(sandbox_id: str, body: RenameBody, request: Request,
                 tenant: CurrentTenant) -> EntryOut:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    src, dst = normalize(body.src), normalize(body.dst)
    await asyncio.to_thread(fs.rename, src, dst)
    return _entry(await asyncio.to_thread(fs.stat, dst))


@router.put("/{sandbox_id}/archive", response_model=UploadOut)
async def upload_archive(sandbox_id: str, path: PathParam, request: Request,
                         tenant: CurrentTenant) -> UploadOut:  # fmt: skip
    """Extract a tar (optionally gzip-compressed) into the directory `path`."""
    fs = await _fs(request, tenant, sandbox_id)
    spool = await _spool(request)
    with spool:
        report = await asyncio.to_thread(archive.upload, fs, path, spool)
    return UploadOut(**report.__dict__)


@router.get("/{sandbox_id}/archive", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-tar": {}}}})  # fmt: skip
async def download_archive(sandbox_id: str, path: PathParam, request: Request,
                           tenant: CurrentTenant) -> StreamingResponse:  # fmt: skip
    fs = await _fs(request, tenant, sandbox_id)
    out = await asyncio.to_thread(archive.download, fs, path)
    return StreamingResponse(stream_file(out), media_type="application/x-tar")
