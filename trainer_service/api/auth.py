"""Bearer-token check for mutating calls when ``SQUARENET_API_TOKEN`` is set.

Every method but GET/HEAD/OPTIONS changes something (submit, cancel, set or remove a
label), so those need the token; reads stay open
so probes, dashboards and ``squarenet jobs`` keep working without a secret. The token is
compared with ``hmac.compare_digest`` so the answer time does not leak how much matched.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from trainer_service.api.problems import Problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = 'Bearer realm="squarenet-trainer"'
TOKEN_CONFIG_KEY = "SQUARENET_API_TOKEN"  # noqa: S105 - the config key, not a token


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
    """Guard every mutating route of ``app`` with ``token`` (None: no guard)."""
    app.config[TOKEN_CONFIG_KEY] = token
    app.before_request(require_token)
