"""Secrets: names and hosts, add, delete. No value is ever sent back to the browser.

The form posts to the same `SecretService` as `/v1/secrets` (its own checks on names,
values and hosts apply); an admin may list and manage any tenant's secrets.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Form, Request, Response

from cloche.control.errors import ApiError
from cloche.server.ui.render import go, page, ui_router
from cloche.server.ui.session import Action, Page

router = ui_router()
TenantField = Annotated[str | None, Form(max_length=64)]


@router.get("/secrets")
async def secrets(request: Request, v: Page) -> Response:
    rows = [(t, row) for t in v.tenants() for row in v.c.secrets.list(t.id)]
    return page(request, "secrets.html", v, rows=rows)


@router.post("/secrets")
async def add(request: Request, v: Action, name: Annotated[str, Form(max_length=64)],
              value: Annotated[str, Form(max_length=8192)], hosts: Annotated[str, Form(max_length=8192)],
              tenant: TenantField = None) -> Response:  # fmt: skip
    """Hosts are separated by commas or white space."""
    owner = v.scope(tenant or None)
    host_list = [h for h in re.split(r"[\s,]+", hosts) if h]
    try:
        v.c.secrets.create(owner.id, name.strip(), value, host_list)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        rows = [(t, row) for t in v.tenants() for row in v.c.secrets.list(t.id)]
        return page(request, "secrets.html", v, exc.status, rows=rows, error=exc.message, name=name, hosts=hosts)
    return go(request, "/ui/secrets")


@router.post("/secrets/delete")
async def delete(request: Request, v: Action, name: Annotated[str, Form(max_length=64)],
                 tenant: TenantField = None) -> Response:  # fmt: skip
    v.c.secrets.delete(v.scope(tenant or None).id, name)
    return go(request, "/ui/secrets")
