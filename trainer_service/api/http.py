"""What every route of the trainer shares: how a body is read and how an answer is written.

The routes are flask-openapi3 operations: a view names its ``path``, ``query`` and ``body``
models in its signature and its answers in ``responses``, and the served ``/openapi.json`` is
built from exactly those models and the views' docstrings. Three conventions complete it:

- ``JsonRequest.get_json`` is the one reader of a JSON body (flask-openapi3 calls it before it
  validates the body model): 415 for another media type, 400 for a broken document or framing,
  413 past ``MAX_CONTENT_LENGTH`` (chunked too), and an empty body is the empty object, so a
  body model whose fields all have defaults takes every default;
- a view answers a model through ``answer``: the document describes what is really sent;
- ``TOKEN`` is the security of every route that changes something (the bearer token, only when
  the trainer has one) and ``refusals`` the problem answers a route documents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from flask import Request, Response, current_app, request
from flask_openapi3.types import ResponseDict
from gunicorn.http.errors import ParseException
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.exceptions import RequestEntityTooLarge

from trainer_service.api.problems import Problem
from trainer_service.lifecycle import RunState

JSON_MIMETYPE = "application/json"
MAX_LIST_LIMIT = 10_000
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}

TOKEN: list[dict[str, list[str]]] = [{"bearer": []}, {}]
"""Routes that change something take the bearer token; ``{}``: none when the trainer has none."""

_UNREAD = object()


class JsonRequest(Request):
    """A request whose ``get_json`` reads the body strictly, once (see the module docstring)."""

    _document: Any = _UNREAD

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body's JSON document ({} for no body) or the problem that says why not.

        ``force`` and ``silent`` are ignored on purpose: a body that is not JSON is refused,
        never taken as absent.
        """
        if self._document is _UNREAD:
            self._document = read_json_body(empty={})
        return self._document


def _non_finite(name: str) -> float:
    """JSON has no NaN or Infinity; let them through as floats so pydantic names the field."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def _more_body() -> bool:
    """True when a chunked body goes on past what werkzeug's limited stream handed over."""
    wsgi_input = request.environ.get("wsgi.input")
    return wsgi_input is not None and bool(wsgi_input.read(1))


def read_json_body(*, empty: Any) -> Any:
    """The request's JSON document (``empty`` for no body), or the problem that says why not."""
    try:
        raw = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH (when announced)
    except ParseException as exc:  # gunicorn met broken chunked framing while reading
        raise Problem(
            400, f"the body's chunked framing is broken: {exc}", kind="malformed-json"
        ) from exc
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(raw) >= limit and _more_body():
        raise RequestEntityTooLarge()  # chunked: werkzeug stops at the limit without saying so
    if not raw.strip():
        return empty
    mimetype = request.mimetype
    if mimetype != JSON_MIMETYPE and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        raise Problem(
            415,
            f"send the body as {JSON_MIMETYPE} (got {mimetype or 'no content type'})",
            kind="unsupported-media-type",
        )
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_non_finite)
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the body is not UTF-8: {exc.reason}", kind="malformed-json") from exc
    except json.JSONDecodeError as exc:
        raise Problem(
            400,
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})",
            kind="malformed-json",
        ) from exc
    except RecursionError as exc:
        raise Problem(400, "the JSON body is nested too deeply", kind="malformed-json") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise Problem(400, f"the JSON body cannot be read: {exc}", kind="malformed-json") from exc


def answer(
    model: BaseModel,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    exclude_none: bool = False,
    exclude_unset: bool = False,
) -> Response:
    """``model`` as the JSON answer (the document's schema of it is the model's own); the
    exclusions are for answers whose fields depend on what was asked."""
    text = model.model_dump_json(
        by_alias=True, exclude_none=exclude_none, exclude_unset=exclude_unset
    )
    return Response(text, status=status, mimetype=JSON_MIMETYPE, headers=dict(headers or {}))


def media(
    mimetype: str, description: str, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A documented answer that is not JSON (an image, a CSV, an event stream, a page)."""
    return {
        "description": description,
        "content": {mimetype: {"schema": dict(schema or {"type": "string"})}},
    }


def described(model: type[BaseModel], description: str, *headers: str) -> dict[str, Any]:
    """A documented JSON answer of ``model`` in the route's own words, with ``headers``
    (e.g. Location) when it sends some."""
    return {
        "description": description,
        "headers": {name: {"schema": {"type": "string"}} for name in headers},
        "content": {JSON_MIMETYPE: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }


PNG = media("image/png", "PNG image.", {"type": "string", "format": "binary"})


class RunQuery(BaseModel):
    """``?state=`` and ``?limit=``: what narrows a list of jobs or of sweeps (other query
    parameters are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: RunState | None = Field(None, description="Only those in this state.")
    limit: int | None = Field(
        None, ge=1, le=MAX_LIST_LIMIT, description="At most this many, newest first."
    )


REASONS = {
    400: "Malformed JSON.",
    401: "Missing or wrong bearer token (only when SQUARENET_API_TOKEN is set).",
    403: "A browser sent it for a page of another origin (`Sec-Fetch-Site` or `Origin`): "
    "`cross-site-request`.",
    404: "No such job, sweep, model, version, label or plot (or nothing drawn in it yet).",
    409: "The job or sweep has already finished (cancel); the sweep has not finished "
    "(delete); no trial of the sweep succeeded (promote); for labels: the version fails "
    'its promotion gate (`gate` holds the report; send "force": true to move it anyway).',
    413: "Body larger than the trainer's --max-body-bytes.",
    415: "Body is not application/json.",
    422: "A field is unknown, of the wrong type or out of range, or breaks a rule that joins "
    "fields (for jobs: batch_size at most the training rows; batch_size × num_neurons at most "
    "2^24; n_samples leaving at least one validation row; early_stopping_patience needs "
    "validation_split > 0); each rejected field is named in `errors`.",
    429: "The job queue is full; retry after `Retry-After` seconds.",
    503: "The model store is unavailable (for /readyz: not writable, or the job runner is "
    "gone; for an event stream: the worker holds as many streams as it may), or the cluster "
    "refused the kubernetes executor's call (`executor-unavailable`); retry after "
    "`Retry-After` seconds.",
}
_HEADERS = {401: "WWW-Authenticate", 429: "Retry-After", 503: "Retry-After"}


def refusals(*statuses: int) -> ResponseDict:
    """The problem answers (``application/problem+json``) a route documents."""
    documented: ResponseDict = {}
    for status in statuses:
        refusal: dict[str, Any] = {
            "description": REASONS[status],
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        if status in _HEADERS:
            refusal["headers"] = {_HEADERS[status]: {"schema": {"type": "string"}}}
        documented[status] = refusal
    return documented
