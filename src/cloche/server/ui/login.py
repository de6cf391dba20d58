"""Sign in with an API key, sign out.

The form posts the key once; the server checks it with the API's own lookup, opens a
server-side session and sets only its random id as a cookie (see session.py). The form
itself is protected by a double-submit token (a cookie and a hidden field that must match)
plus the Origin check, so no other site can sign a browser into an account of its choosing.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse

from cloche.control.errors import ApiError
from cloche.server.auth import tenant_for_key
from cloche.server.context import ctx
from cloche.server.ui.render import page, ui_router
from cloche.server.ui.session import COOKIE, LOGIN_COOKIE, Action, same_origin, sessions, tokens_match

router = ui_router()


def _cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="strict", path="/ui",
                        secure=request.url.scheme == "https")  # fmt: skip


def _form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", None, status, token=token, error=error)
    _cookie(request, response, LOGIN_COOKIE, token)
    return response


@router.get("")
async def home() -> Response:
    return RedirectResponse("/ui/sandboxes", 303)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _form(request)


@router.post("/login")
async def login(request: Request, key: Annotated[str, Form(max_length=512)],
                csrf: Annotated[str, Form(max_length=128)] = "") -> Response:  # fmt: skip
    if not same_origin(request) or not tokens_match(csrf, request.cookies.get(LOGIN_COOKIE, "")):
        raise ApiError(403, "forbidden", "sign-in refused: cross-origin or stale form; reload and retry")
    try:
        tenant_for_key(ctx(request), key.strip())
    except ApiError as exc:
        if exc.status != 401:
            raise
        return _form(request, 401, "That key is not valid (or was revoked).")
    sid, _ = sessions(request).open(key.strip())
    response = RedirectResponse("/ui/sandboxes", 303)
    _cookie(request, response, COOKIE, sid)
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, _: Action) -> Response:
    sessions(request).close(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
