"""The dashboard: one HTML page at ``/`` and its scripts, served by the trainer itself.

Same origin as the API, so the page needs no CORS and no second service; everything it
shows comes from the public REST API (``/v1/...``). Assets ship inside this package
(``static/``, including the vendored Chart.js and its licence): no CDN, no remote font.
Views live behind hash routes (``/#/jobs/<id>``), so every view has a URL that survives a
reload while the server keeps exactly one page route.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3.blueprint import APIBlueprint

STATIC_URL_PATH = "/dashboard/static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
"""Only this origin: a field value rendered by mistake as markup still runs nothing."""

bp = APIBlueprint("dashboard", __name__, static_folder="static", static_url_path=STATIC_URL_PATH)
PAGE = {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}


@bp.get("/", operation_id="dashboard", responses={200: PAGE})
def index() -> Response:
    """The dashboard (HTML); each view is a hash route of this page."""
    page = bp.send_static_file("index.html")
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page
