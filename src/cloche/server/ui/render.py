"""Rendering for the dashboard: Jinja2 templates, the page route class, static files.

Why a route class: the API answers errors as JSON through app-wide handlers, but a browser
needs a sign-in redirect or an HTML error page. `UiRoute` does that for the dashboard's
routes only, and puts the security headers on every answer in one place.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from cloche.control.errors import ApiError
from cloche.server.ui.session import LoginRequired, Viewer

HERE = Path(__file__).parent
STATIC = {p.relative_to(HERE / "static").as_posix(): p for p in (HERE / "static").rglob("*") if p.is_file()}
HEADERS = {
    # no inline script anywhere; xterm.js sets element styles, hence 'unsafe-inline' for styles only
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}  # fmt: skip
templates = Jinja2Templates(directory=HERE / "templates")


def _age(ts: float | None) -> str:
    if not ts:
        return "—"
    s = max(0.0, time.time() - ts)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{int(s // n)}{unit}"
    return f"{int(s)}s"


def _size(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


templates.env.filters["age"] = _age
templates.env.filters["size"] = _size


def page(request: Request, name: str, v: Viewer | None, status: int = 200, **values: Any) -> Response:
    return templates.TemplateResponse(request, name, {"v": v, **values}, status_code=status)


def live_page(request: Request, name: str, v: Viewer, **values: Any) -> Response:
    """A page that refreshes itself: htmx polls the same URL and gets only the live part,
    the template `_<name>` (which the full page includes)."""
    return page(request, f"_{name}" if is_htmx(request) else name, v, **values)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def go(request: Request, url: str) -> Response:
    """After an action, show `url`: htmx follows HX-Redirect, a plain form a 303."""
    return Response(status_code=204, headers={"HX-Redirect": url}) if is_htmx(request) else RedirectResponse(url, 303)


class UiRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = go(request, "/ui/login")
            except ApiError as exc:
                response = page(request, "_error.html" if is_htmx(request) else "error.html",
                                getattr(request.state, "viewer", None), exc.status, error=exc)
                if is_htmx(request):  # show it where the action's answer would have gone
                    response.headers["HX-Retarget"] = "#flash"
                    response.headers["HX-Reswap"] = "innerHTML"
            response.headers.update(HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return run


def ui_router() -> APIRouter:
    return APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)


router = ui_router()


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    """Only the files shipped in the package (a fixed map, so no path reaches outside it)."""
    path = STATIC.get(name)
    if path is None:
        raise ApiError(404, "not_found", "no such file")
    media = mimetypes.guess_type(path.name)[0] or "text/plain"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})
