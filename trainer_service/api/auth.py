"""Who may change something: no page of another site, and the token holder when there is one.

Every method but GET/HEAD/OPTIONS changes something (submit, cancel, set or remove a
label). A browser will send such a request from any page it shows, without a preflight when
it looks like a form post (a body-less ``POST /v1/jobs`` queues a job): so a request a
browser marks as coming from another site (``Sec-Fetch-Site``) or another origin
(``Origin``) is refused with 403 whatever the token (cross-site request forgery). The
dashboard is served by the trainer itself, same origin, and non-browser clients send
neither header. When ``SQUARENET_API_TOKEN`` is set, mutating calls also need the token;
reads stay open so probes, dashboards and ``squarenet jobs`` keep working without a
secret. The token is compared with ``hmac.compare_digest`` so the answer time does not leak
how much matched.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from trainer_service.api.problems import Problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = 'Bearer realm="squarenet-trainer"'
TOKEN_CONFIG_KEY = "SQUARENET_API_TOKEN"  # noqa: S105 - the config key, not a token


# what a browser says of a request its own page made here (or the user typed in)
OWN_SITE = frozenset({"same-origin", "none"})


def refuse_other_sites() -> None:
    """Refuse (403) a mutating request a browser made for a page of another origin."""
    if request.method in SAFE_METHODS or request.routing_exception is not None:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in OWN_SITE:
        raise Problem(
            403,
            f"a page of another site may not change anything here (Sec-Fetch-Site: {site})",
            kind="cross-site-request",
        )
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin.strip()).netloc.lower() != request.host.lower():
        raise Problem(
            403,
            f"a page of another origin may not change anything here (Origin: {origin})",
            kind="cross-site-request",
        )


def require_token() -> None:
    """Refuse a mutating request whose bearer token is missing or wrong (401)."""
    expected: str | None = current_app.config.get(TOKEN_CONFIG_KEY)
    if expected is None or request.method in SAFE_METHODS:
        return
    if request.routing_exception is not None:
        return  # unknown route or method: the 404 / 405 says more than a 401
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Problem(
            401,
            "this call needs an Authorization: Bearer token",
            kind="unauthorized",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise Problem(
            401,
            "the bearer token is wrong",
            kind="unauthorized",
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )


def init_app(app: Flask, token: str | None) -> None:
    """Guard every mutating route of ``app`` from other sites and with ``token`` (None: no
    token needed)."""
    app.config[TOKEN_CONFIG_KEY] = token
    app.before_request(refuse_other_sites)
    app.before_request(require_token)
