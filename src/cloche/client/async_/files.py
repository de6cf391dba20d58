"""The async face of a sandbox's files: ``sandbox.files``.

It mirrors :mod:`cloche.client.sync.files` method for method.
"""

from __future__ import annotations

from typing import IO, TypeVar

from .. import _api, _flows
from .._base import ProgressCallback
from ..models import (
    Entry,
    WriteResult,
)
from ._sender import AsyncSender

T = TypeVar("T")


class AsyncFiles:
    """``sandbox.files``: read, write and manage files inside one sandbox."""

    def __init__(self, client: AsyncSender, sandbox_id: str) -> None:
        self._client = client
        self._id = sandbox_id

    async def read(self, path: str) -> bytes:
        """Return the content of the regular file at ``path``."""
        return await self._client._call(_api.read_file(self._id, path))

    async def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the content of the file at ``path`` decoded as text."""
        return (await self.read(path)).decode(encoding, errors)

    async def download(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the file at ``path`` into ``dest``; return the bytes written."""
        return await self._client._download(_api.read_file(self._id, path), dest, on_progress)

    async def write(
        self, path: str, data: bytes | str | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> WriteResult:
        """Atomically create or replace the file at ``path`` (creating missing parent
        directories) with bytes, text or a binary file object."""
        return await self._client._call(_api.write_file(self._id, path, data), on_progress)

    async def list(self, path: str = "/workspace") -> list[Entry]:
        """List the directory at ``path``."""
        return await self._client._call(_api.list_dir(self._id, path))

    async def stat(self, path: str) -> Entry:
        """Describe the entry at ``path``."""
        return await self._client._call(_api.stat(self._id, path))

    async def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        return await self._client._run(_flows.exists(self._id, path))

    async def mkdir(self, path: str) -> Entry:
        """Create the directory ``path``; return its entry."""
        return await self._client._call(_api.mkdir(self._id, path))

    async def remove(self, path: str, recursive: bool = False) -> None:
        """Delete the file or empty directory at ``path`` (any directory if ``recursive``)."""
        await self._client._call(_api.remove(self._id, path, recursive))

    async def rename(self, src: str, dst: str) -> Entry:
        """Move ``src`` to ``dst``; return the entry at its new path."""
        return await self._client._call(_api.rename(self._id, src, dst))
