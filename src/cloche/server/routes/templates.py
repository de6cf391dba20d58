"""Templates: the read-only lower layers sandboxes are built on. Listing is open to
every tenant; importing and deleting need the admin key (templates are trusted input)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from cloche.server.auth import Admin, CurrentTenant
from cloche.server.context import ctx

router = APIRouter(prefix="/v1/templates", tags=["templates"])
TemplateName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="template name")]


class TemplateOut(BaseModel):
    name: str
    on_base: bool


class TemplateList(BaseModel):
    items: list[TemplateOut]


def _out(request: Request, name: str) -> TemplateOut:
    template = ctx(request).templates.get(name)
    return TemplateOut(name=template.name, on_base=template.on_base)


@router.get("", response_model=TemplateList)
async def list_templates(request: Request, _: CurrentTenant) -> TemplateList:
    names = ctx(request).templates.names()
    return TemplateList(items=[_out(request, n) for n in names])


@router.put("/{name}", status_code=201, response_model=TemplateOut)
async def import_template(name: TemplateName, request: Request, _: Admin,
                          on_base: Annotated[bool, Query(description="lay the files over the base template")] = False,
                          ) -> TemplateOut:  # fmt: skip
    """Import a rootfs tarball (optionally gzip/xz) as a template, replacing one of the
    same name. Sandboxes created afterwards use it; running ones keep theirs."""
    template = await ctx(request).templates.import_tar(name, request.stream(), on_base)
    return TemplateOut(name=template.name, on_base=template.on_base)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_template(name: TemplateName, request: Request, _: Admin) -> Response:
    ctx(request).templates.delete(name)
    return Response(status_code=204)
