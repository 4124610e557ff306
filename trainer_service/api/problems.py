"""RFC 9457 problem details: the one place where errors become HTTP answers.

Views raise domain errors (``trainer_service.errors``), pydantic ``ValidationError`` or
:class:`Problem`; werkzeug raises its ``HTTPException`` for routing, size and method
errors. One handler registered for ``Exception`` turns each into
``application/problem+json`` with ``type``, ``title``, ``status`` and ``detail`` (and
``errors: [{field, message}]`` for 422). An ``OSError`` means the shared store failed
under us (volume gone, disk full): 503 with ``Retry-After``, logged. Anything else is a
bug: it is logged with its traceback and the client gets a 500 problem that reveals nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from pydantic import BaseModel, Field, ValidationError
from werkzeug.exceptions import HTTPException

from trainer_service.errors import TrainerError

PROBLEM_MIMETYPE = "application/problem+json"
TYPE_PREFIX = "urn:squarenet:problem:"
RETRY_AFTER_SECONDS = 5
# a body field a 422 cannot pin on one key (e.g. the body is a list, not an object)
BODY_FIELD = "body"
VALIDATION_KIND = "validation-error"

log = logging.getLogger("squarenet.trainer.http")


class FieldError(BaseModel):
    """One rejected field of a 422."""

    field: str = Field(description="Dotted path of the field; 'body' for the body itself.")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (``application/problem+json``): every refusal's shape."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = Field(
        None, description="Present on 422: every rejected field."
    )


class Problem(Exception):
    """An error a view wants to answer with a given status (and optional field errors)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or _slug(HTTPStatus(status).phrase)
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})

    @classmethod
    def invalid(cls, field: str, message: str, *, detail: str | None = None) -> Problem:
        """422 naming the one ``field`` a request got wrong; ``detail`` defaults to
        ``<field>: <message>``, as ``validation_problem`` words each field pydantic rejects."""
        return cls(
            422,
            detail if detail is not None else f"{field}: {message}",
            kind=VALIDATION_KIND,
            errors=[{"field": field, "message": message}],
        )

    def to_response(self) -> Response:
        """The problem document as an HTTP response."""
        document: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "instance": request.path,
        }
        if self.errors is not None:
            document["errors"] = self.errors
        response = Response(
            json.dumps(document, ensure_ascii=False), status=self.status, mimetype=PROBLEM_MIMETYPE
        )
        response.headers.update(self.headers)
        return response


def _slug(phrase: str) -> str:
    return phrase.lower().replace(" ", "-").replace("'", "")


def field_name(location: Sequence[int | str]) -> str:
    """``("params", 0, "epochs")`` -> ``"params.0.epochs"``; the empty location is the body."""
    return ".".join(str(part) for part in location) or BODY_FIELD


def validation_problem(exc: ValidationError) -> Problem:
    """422 naming every field pydantic rejected, in the order it found them."""
    errors = [
        {"field": field_name(error["loc"]), "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(422, summary, kind=VALIDATION_KIND, errors=errors)


def to_problem(exc: Exception) -> Problem:
    """Map any exception to the problem a client should see."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, ValidationError):
        return validation_problem(exc)
    if isinstance(exc, TrainerError):
        if exc.retry:
            return _retry_later(exc.status, str(exc), kind=exc.kind)
        return Problem(exc.status, str(exc), kind=exc.kind)
    if isinstance(exc, HTTPException):
        return _http_problem(exc)
    if isinstance(exc, RecursionError):
        return Problem(400, "the JSON body is nested too deeply", kind="malformed-json")
    if isinstance(exc, OSError):
        return _retry_later(
            503,
            "the model store cannot be read or written right now; retry later",
            kind="store-unavailable",
        )
    return Problem(500, "the server met an unexpected error; it has been logged", kind="internal")


def _retry_later(status: int, detail: str, *, kind: str) -> Problem:
    """A refusal that passes: the client may retry after ``RETRY_AFTER_SECONDS``."""
    return Problem(status, detail, kind=kind, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _http_problem(exc: HTTPException) -> Problem:
    status = exc.code or 500
    headers: dict[str, str] = {}
    # werkzeug computes Allow (405) and similar headers on its own response
    for name in ("Allow", "WWW-Authenticate", "Retry-After"):
        value = exc.get_response().headers.get(name)
        if value:
            headers[name] = value
    detail = exc.description or HTTPStatus(status).description
    return Problem(status, detail, headers=headers)


def handle_error(exc: Exception) -> Response:
    """The one error handler: every failure leaves as a problem response."""
    problem = to_problem(exc)
    if problem.status >= 500 and isinstance(exc, TrainerError):
        log.error("request failed status=%d path=%s: %s", problem.status, request.path, exc)
    elif problem.status >= 500 and not isinstance(exc, Problem | HTTPException):
        log.error(
            "request failed status=%d method=%s path=%s",
            problem.status,
            request.method,
            request.path,
            exc_info=exc,
        )
    return problem.to_response()


def raise_invalid(exc: ValidationError) -> Response:
    """flask-openapi3's validation callback: its ValidationError leaves through ``handle_error``
    like every other (422 naming each field), instead of the extension's own format."""
    raise exc


def init_app(app: Flask) -> None:
    """Register :func:`handle_error` for every exception the app can raise."""
    app.register_error_handler(Exception, handle_error)
