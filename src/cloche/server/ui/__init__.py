"""The web dashboard at /ui: server-rendered pages (Jinja2), htmx for live parts and
actions, xterm.js for terminals. Everything is served from the package (no build step, no
CDN); see static/vendor/README.md for the vendored libraries.

`install(app)` adds the routes and the dashboard's own state (sessions).
"""

from __future__ import annotations

from fastapi import FastAPI

from cloche.server.ui import apps, files, login, nodes, render, sandboxes, secrets
from cloche.server.ui.session import Sessions


def install(app: FastAPI) -> None:
    app.state.ui_sessions = Sessions()
    for module in (render, login, sandboxes, files, apps, nodes, secrets):
        app.include_router(module.router)
