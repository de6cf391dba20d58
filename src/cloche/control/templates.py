"""Templates through control: the read-only lower layers sandboxes are built on.

Why it exists: routes and E2B name, list, import and delete templates through control,
never through the node; the node keeps the files (`api.Node` template calls)."""

from __future__ import annotations

from collections.abc import AsyncIterable

from cloche.node.api import Node, TemplateInfo


class TemplateService:
    def __init__(self, node: Node) -> None:
        self.node = node

    def names(self) -> list[str]:
        return self.node.template_names()

    def get(self, name: str) -> TemplateInfo:
        return self.node.template(name)

    async def import_tar(self, name: str, tarball: AsyncIterable[bytes], on_base: bool = False) -> TemplateInfo:
        """Import a rootfs tarball (optionally gzip/xz), streamed in, replacing one of the same name."""
        return await self.node.import_template(name, tarball, on_base)

    def delete(self, name: str) -> None:
        self.node.delete_template(name)
