"""The built dashboard (``web/dist``): ``index.html`` at ``/`` and its hashed assets.

The page carries no data: it signs in with an API token the user types and reads everything
through ``/api`` with that token, so these routes need none. ``MODELCI_WEB_DIST`` points at
another build. The content security policy keeps the page to this origin (no inline scripts;
inline styles are needed by the chart and graph libraries).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from cl_server.api.errors import not_found

ENV_WEB_DIST = "MODELCI_WEB_DIST"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'")
_NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>ModelCI-e</title>
<link rel="icon" href="data:,"></head><body style="font-family:sans-serif;margin:3em">
<h1>ModelCI-e</h1><p>The dashboard is not built. Build it with
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code> (<code>./run demo</code> does this),
then reload. The API is at <a href="api/openapi.json">/api/openapi.json</a>.</p></body></html>
"""

bp = Blueprint("web", __name__)


def web_dist() -> Path:
    """Where the built dashboard is: ``MODELCI_WEB_DIST``, else ``web/dist`` of the checkout."""
    default = Path(__file__).resolve().parents[3] / "web" / "dist"
    return Path(os.environ.get(ENV_WEB_DIST, default))


def _page(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def index() -> Response:
    dist = web_dist()
    if not (dist / "index.html").is_file():
        return _page(Response(_NOT_BUILT, status=200, mimetype="text/html"))
    response = send_from_directory(dist, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return _page(response)


@bp.get("/assets/<path:filename>")
def asset(filename: str) -> Response:
    """A hashed asset: its name changes with its content, so it may be cached for a year.
    ``send_from_directory`` refuses paths that leave the folder (404)."""
    folder = web_dist() / "assets"
    if not folder.is_dir():
        raise not_found(f"asset '{filename}'")
    return _page(send_from_directory(folder, filename, max_age=365 * 24 * 3600))
