"""What runs the trainer needs of it: liveness, readiness, metrics and the API's document."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel

from trainer_service.api import metrics
from trainer_service.api.http import answer, media, refusals
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.runner.local import pool_warm

bp = APIBlueprint("operations", __name__)
DOCUMENT_KEY = "squarenet.openapi"


class Health(BaseModel):
    """The process answers."""

    status: str


class Readiness(BaseModel):
    """Every check passed: the store is writable, the runner (and its job processes) alive."""

    status: str
    checks: dict[str, bool]


@bp.get("/healthz", operation_id="healthz", responses={200: Health})
def healthz() -> Response:
    """Liveness."""
    return answer(Health(status="ok"))


def runner_alive(pid: int) -> bool:
    """True when the job runner process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True  # no /proc: existence is all we can tell
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def store_writable(root: Path) -> bool:
    """True when a file can be created and removed in the store."""
    probe = root / f".ready-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


@bp.get("/readyz", operation_id="readyz", responses={200: Readiness, **refusals(503)})
def readyz() -> Response:
    """Readiness: store writable, job runner alive.

    With the local executor, its pool of job processes has also been warm, so no job waits
    for TensorFlow.
    """
    svc = services()
    settings = svc.settings
    checks = {"model_store": store_writable(settings.model_store)}
    if settings.runner_pid is not None:
        checks["job_runner"] = runner_alive(settings.runner_pid)
        if settings.executor == "local":
            checks["job_processes"] = pool_warm(svc.book, runner_alive)
    failing = sorted(name for name, ok in checks.items() if not ok)
    if failing:
        raise Problem(
            503,
            "not ready: " + ", ".join(failing) + " failing",
            kind="not-ready",
            headers={"Retry-After": "5"},
        )
    return answer(Readiness(status="ready", checks=checks))


@bp.get(
    "/metrics",
    operation_id="metrics",
    responses={200: media("text/plain", "Metrics.")},
)
def prometheus_metrics() -> Response:
    """Prometheus text format."""
    return metrics.metrics_response(services().book)


@bp.get(
    "/openapi.json",
    operation_id="openapi",
    responses={200: media("application/json", "OpenAPI 3.1.", {"type": "object"})},
)
def openapi() -> Response:
    """This document."""
    # built once per app: the routes, and so the document, are fixed once create_app returns
    served = current_app.extensions.get(DOCUMENT_KEY)
    if served is None:
        served = served_document(current_app.api_doc)  # type: ignore[attr-defined]
        current_app.extensions[DOCUMENT_KEY] = served
    return jsonify(served)


def served_document(generated: dict[str, Any]) -> dict[str, Any]:
    """flask-openapi3's document, with two of its habits undone.

    It adds a 422 to every operation that names none: a route that can answer 422 documents
    it with ``refusals(422)`` (the problem document), the others never do, so the blanket
    entry would only mislead a client. It joins a docstring's lines with ``<br/>``: the
    description is given back as the docstring's paragraphs.
    """
    document = copy.deepcopy(generated)
    for operations in document["paths"].values():
        for operation in operations.values():
            if "description" in operation:
                operation["description"] = _paragraphs(operation["description"])
            content = operation["responses"].get("422", {}).get("content", {})
            if content and "application/problem+json" not in content:
                del operation["responses"]["422"]
    return document


def _paragraphs(joined: str) -> str:
    """``"<br/>a<br/>b<br/><br/>c"`` -> ``"a b\n\nc"``: the docstring's paragraphs again."""
    paragraphs = " ".join(line.strip() or "\n\n" for line in joined.split("<br/>"))
    return "\n\n".join(part.strip() for part in paragraphs.split("\n\n") if part.strip())
