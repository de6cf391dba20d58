"""A running sandbox's files (browse, download, upload) and its terminal.

Files go through the node's path-safe file streams after the sandbox service's ownership
check, as the API's file routes do. The terminal is the API's own PTY session
(`routes.exec.serve_pty`), reached by a WebSocket that authenticates with the session
cookie and the Origin header instead of a bearer key: a page of another site cannot open
it, since browsers send Origin on every WebSocket handshake and it must be this host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import File, Form, Query, Request, Response, UploadFile, WebSocket
from fastapi.responses import StreamingResponse

from cloche.control.errors import ApiError
from cloche.node.api import CHUNK, SandboxFiles
from cloche.node.files import normalize
from cloche.server.routes.exec import serve_pty
from cloche.server.ui.render import page, ui_router
from cloche.server.ui.session import Action, LoginRequired, Page, Viewer, resolve, same_origin

router = ui_router()
PathQuery = Annotated[str, Query(min_length=1, max_length=8192)]


async def _fs(v: Viewer, sandbox_id: str) -> SandboxFiles:
    return await v.c.inside.files(v.owner(sandbox_id), sandbox_id)


async def _listing(request: Request, v: Viewer, sandbox_id: str, path: str, note: str | None = None) -> Response:
    fs = await _fs(v, sandbox_id)
    path = normalize(path)
    entries = sorted(await fs.list(path), key=lambda e: (e.type != "dir", e.name))
    crumbs = [(p.name or "/", str(p)) for p in reversed([PurePosixPath(path), *PurePosixPath(path).parents])]
    return page(request, "_files.html", v, sid=sandbox_id, path=path, entries=entries, crumbs=crumbs,
                parent=str(PurePosixPath(path).parent), note=note)  # fmt: skip


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    """The upload as the form parser spooled it, in chunks."""
    while data := await file.read(CHUNK):
        yield data


@router.get("/sandboxes/{sandbox_id}/files")
async def files(request: Request, sandbox_id: str, v: Page, path: PathQuery = "/workspace") -> Response:
    """The listing of one directory (the file browser panel)."""
    return await _listing(request, v, sandbox_id, path)


@router.get("/sandboxes/{sandbox_id}/download")
async def download(sandbox_id: str, v: Page, path: PathQuery) -> Response:
    fs = await _fs(v, sandbox_id)
    path = normalize(path)
    size = await fs.size(path)
    name = PurePosixPath(path).name.replace('"', "") or "file"
    return StreamingResponse(fs.read(path), media_type="application/octet-stream",
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.post("/sandboxes/{sandbox_id}/files")
async def upload(request: Request, sandbox_id: str, v: Action, path: Annotated[str, Form(min_length=1)],
                 file: Annotated[UploadFile, File()]) -> Response:  # fmt: skip
    """Write the uploaded file into the directory `path` (atomically, as the API's PUT does)."""
    fs = await _fs(v, sandbox_id)
    directory = normalize(path)
    target = normalize(f"{directory}/{PurePosixPath(file.filename or 'upload').name}")
    size = await fs.write(target, _chunks(file), 0o644)
    return await _listing(request, v, sandbox_id, directory, note=f"uploaded {target} ({size} bytes)")


@router.websocket("/sandboxes/{sandbox_id}/pty")
async def pty(websocket: WebSocket, sandbox_id: str) -> None:
    """xterm.js in the sandbox page talks to this: the same frames as /v1/sandboxes/{id}/pty."""
    if not same_origin(websocket):
        await websocket.close(code=4403, reason="cross-origin WebSocket refused")
        return
    try:
        v = resolve(websocket)
    except LoginRequired:
        await websocket.close(code=4401, reason="sign in first")
        return
    except ApiError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return
    await serve_pty(websocket, v.owner(sandbox_id), sandbox_id)
