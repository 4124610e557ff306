"""JSON the dashboard's charts draw: a job's loss per epoch and its fit curve.

Public REST endpoints like any other (documented in ``/openapi.json``): ``/epochs`` is the
history the event stream replays, in one answer; ``/fit`` is ``fit.json``, written by the
job beside ``fit.png`` from the model it published.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app

from trainer_service.runner.book import JobBook
from trainer_service.training.fit_curve import FIT_DATA

bp = Blueprint("chart_data", __name__)


def _book() -> JobBook:
    """The app's job book (built by ``create_app``)."""
    book: JobBook = current_app.extensions["squarenet"].book
    return book


def _json(document: dict[str, Any]) -> Response:
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return Response(text, mimetype="application/json", headers={"Cache-Control": "no-cache"})


@bp.get("/v1/jobs/<job_id>/epochs")
def job_epochs(job_id: str) -> Response:
    """Every finished epoch of the job: ``{"epoch", "loss", "val_loss"}`` (404 unknown job)."""
    book = _book()
    job = book.get(job_id)
    rows = book.epochs_since(job_id, 0)
    return _json({"job_id": job.id, "epochs": job.progress.epochs, "history": rows})


@bp.get("/v1/jobs/<job_id>/fit")
def job_fit(job_id: str) -> Response:
    """The fit curve of a finished job (404 until the job has drawn it)."""
    book = _book()
    job = book.get(job_id)
    curve = json.loads(book.artifact_path(job_id, FIT_DATA).read_text(encoding="utf-8"))
    return _json({"job_id": job.id, "model_version": job.model_version, **curve})
