"""The blocking face of a sandbox's files: ``sandbox.files``.

Mirrored by :mod:`cloche.client.async_.files`; the requests live in :mod:`cloche.client._api`.
"""

from __future__ import annotations

from typing import IO, TypeVar

from .. import _api, _flows
from .._base import ProgressCallback
from ..models import (
    Entry,
    WriteResult,
)
from ._sender import Sender

T = TypeVar("T")


class Files:
    """``sandbox.files``: read, write and manage files inside one sandbox.

    Relative paths are resolved by the server against ``/workspace``.
    """

    def __init__(self, client: Sender, sandbox_id: str) -> None:
        self._client = client
        self._id = sandbox_id

    def read(self, path: str) -> bytes:
        """Return the content of the regular file at ``path``.

        Raises:
            NotFound: The file does not exist.
            InvalidRequest: ``path`` is a directory (or not a regular file).
        """
        return self._client._call(_api.read_file(self._id, path))

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the content of the file at ``path`` decoded as text."""
        return self.read(path).decode(encoding, errors)

    def download(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream the file at ``path`` into the binary file object ``dest``.

        Returns:
            The number of bytes written.
        """
        return self._client._download(_api.read_file(self._id, path), dest, on_progress)

    def write(
        self, path: str, data: bytes | str | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> WriteResult:
        """Atomically create or replace the file at ``path``; missing parent directories are created.

        Args:
            path: Destination path in the sandbox.
            data: Bytes, text (written as UTF-8) or a binary file object to stream.
            on_progress: Called with each chunk's size as it is sent.

        Raises:
            PayloadTooLarge: The file exceeds the server's upload limit.
            DiskFull: The sandbox's disk quota is exhausted.
        """
        return self._client._call(_api.write_file(self._id, path, data), on_progress)

    def list(self, path: str = "/workspace") -> list[Entry]:
        """List the directory at ``path``.

        Raises:
            InvalidRequest: ``path`` is not a directory.
        """
        return self._client._call(_api.list_dir(self._id, path))

    def stat(self, path: str) -> Entry:
        """Describe the entry at ``path`` (symlinks are not followed)."""
        return self._client._call(_api.stat(self._id, path))

    def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        return self._client._run(_flows.exists(self._id, path))

    def mkdir(self, path: str) -> Entry:
        """Create the directory ``path``; return its entry."""
        return self._client._call(_api.mkdir(self._id, path))

    def remove(self, path: str, recursive: bool = False) -> None:
        """Delete the file or empty directory at ``path`` (any directory if ``recursive``)."""
        self._client._call(_api.remove(self._id, path, recursive))

    def rename(self, src: str, dst: str) -> Entry:
        """Move ``src`` to ``dst``; return the entry at its new path."""
        return self._client._call(_api.rename(self._id, src, dst))
