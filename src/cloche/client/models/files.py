"""File-system answers: an entry, a write, an extracted tar upload."""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel


class Entry(ApiModel):
    """A file-system entry inside a sandbox."""

    name: str
    path: str
    type: str = Field(description="One of file, dir, symlink, other.")
    size: int = 0
    mode: int = 0
    mtime: float = 0.0
    target: str | None = Field(None, description="Link target, for symlinks.")

    @property
    def is_dir(self) -> bool:
        """True for directories."""
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        """True for regular files."""
        return self.type == "file"


class WriteResult(ApiModel):
    """Answer of a file write: the normalized path and the bytes written."""

    path: str
    size: int


class SkippedMember(ApiModel):
    """An archive member the server refused to extract, and why."""

    name: str
    reason: str


class ArchiveResult(ApiModel):
    """Summary of an extracted tar upload."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[SkippedMember] = Field(default_factory=list)
