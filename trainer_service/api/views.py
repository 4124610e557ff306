"""The trainer's REST routes: thin views over the job book and the model store.

Views only translate HTTP to calls on ``JobBook`` / ``ModelStore`` and back; every refusal
is raised and leaves through the one problem handler (``problems``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import RequestEntityTooLarge

from squarenet.store import BrokenVersion, ModelStore, StoreError
from trainer_service.api import metrics
from trainer_service.api.events import (
    BUSY_RETRY_AFTER_SECONDS,
    StreamSlots,
    job_events,
    last_event_id,
)
from trainer_service.api.openapi import JobList, JobQuery, openapi_document
from trainer_service.api.problems import Problem
from trainer_service.errors import PlotNotFound, QueueFull
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.rollouts.gate import measured_versions
from trainer_service.rollouts.moves import gate_reports, version_gate
from trainer_service.runner.book import JobBook
from trainer_service.runner.executor import Executor
from trainer_service.runner.local import pool_warm
from trainer_service.settings import Settings

PLOT_NAMES = ("loss", "fit")
JSON_MIMETYPE = "application/json"

bp = Blueprint("trainer", __name__)
log = logging.getLogger("squarenet.trainer.api")


@dataclass(frozen=True)
class Services:
    """What the views work with, built once per app by ``create_app``."""

    settings: Settings
    store: ModelStore
    executor: Executor
    streams: StreamSlots

    @property
    def book(self) -> JobBook:
        """The executor's job book."""
        return self.executor.book


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["squarenet"]
    return found


def _json(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status=status, mimetype=JSON_MIMETYPE, headers=headers)


# --- jobs -------------------------------------------------------------------------------


def _non_finite(name: str) -> float:
    """JSON has no NaN or Infinity; let them through as floats so pydantic names the field."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def _more_body() -> bool:
    """True when a chunked body goes on past what werkzeug's limited stream handed over."""
    wsgi_input = request.environ.get("wsgi.input")
    return wsgi_input is not None and bool(wsgi_input.read(1))


def read_training_params() -> TrainingParams:
    """The request body as TrainingParams: an empty body means every default."""
    return TrainingParams.model_validate(read_json_body("the hyperparameters", empty={}))


def read_json_body(what: str, *, empty: Any) -> Any:
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
            f"send {what} as {JSON_MIMETYPE} (got {mimetype or 'no content type'})",
            kind="unsupported-media-type",
        )
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, parse_constant=_non_finite)
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
    return document


def capped(params: TrainingParams, cap: int) -> TrainingParams:
    """``max_train_seconds`` within this trainer's cap: a default is lowered, a request refused."""
    if params.max_train_seconds <= cap:
        return params
    if "max_train_seconds" not in params.model_fields_set:
        return params.model_copy(update={"max_train_seconds": cap})
    message = f"must be at most {cap} on this trainer (its --max-train-seconds)"
    raise Problem.invalid("max_train_seconds", message)


@bp.post("/v1/jobs")
def submit_job() -> Response:
    """Queue a training job (202); it runs in the job runner, never in this worker."""
    params = capped(read_training_params(), services().settings.max_train_seconds)
    try:
        job = services().executor.submit(params)
    except QueueFull:
        metrics.JOBS_REJECTED.inc()
        raise
    metrics.JOBS_SUBMITTED.inc()
    log.info("job %s submitted epochs=%d n_samples=%d", job.id, params.epochs, params.n_samples)
    location = url_for("trainer.get_job", job_id=job.id)
    return _json(job.model_dump_json(), 202, {"Location": location})


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    """Every job, newest first (``?state=``, ``?sweep=`` and ``?limit=`` narrow it)."""
    query = JobQuery.model_validate(request.args.to_dict())
    jobs = services().book.list()
    if query.state is not None:
        jobs = [job for job in jobs if job.state is query.state]
    if query.sweep is not None:
        jobs = [job for job in jobs if job.sweep_id == query.sweep]
    if query.limit is not None:
        jobs = jobs[: query.limit]
    return _json(JobList(jobs=jobs).model_dump_json())


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """One job as it is now."""
    return _json(services().book.get(job_id).model_dump_json())


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a job and answer at once: 200 when it is CANCELLED already (it was QUEUED);
    202 with the job as it is while its runner stops it (the client follows the job)."""
    job = services().executor.cancel(job_id)
    log.info("job %s cancel answered state=%s", job.id, job.state)
    return _json(job.model_dump_json(), 200 if job.state is RunState.CANCELLED else 202)


@bp.get("/v1/jobs/<job_id>/events")
def job_event_stream(job_id: str) -> Response:
    """``text/event-stream`` of the job's epochs, then its final state (503 when full)."""
    svc = services()
    svc.book.get(job_id)  # 404 now, before the stream has started
    return event_stream(
        job_events(
            svc.book,
            job_id,
            after=last_event_id(request.headers.get("Last-Event-ID")),
            poll_interval=svc.settings.sse_poll_interval,
            keepalive=svc.settings.sse_keepalive,
        )
    )


def event_stream(events: Iterator[str]) -> Response:
    """``events`` as a ``text/event-stream`` holding one of this worker's stream slots.

    Every event route answers through here, so ``--max-event-streams`` bounds them all:
    past the bound the answer is 503 with ``Retry-After`` at once.
    """
    svc = services()
    stream = svc.streams.open(events)
    if stream is None:
        raise Problem(
            503,
            f"this worker holds {svc.streams.limit} event streams already; try again shortly",
            kind="too-many-streams",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
        )
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@bp.get("/v1/jobs/<job_id>/plots/<plot>.png")
def job_plot(job_id: str, plot: str) -> Response:
    """The job's figure: ``loss`` (loss per epoch) or ``fit`` (data and predictions)."""
    book = services().book
    if plot not in PLOT_NAMES:
        book.get(job_id)  # an unknown job is the first thing to say
        raise PlotNotFound(job_id, f"{plot}.png")
    path: Path = book.artifact_path(job_id, f"{plot}.png")
    return send_file(path, mimetype="image/png", max_age=0)


# --- models -----------------------------------------------------------------------------


def model_labels(store: ModelStore, model_name: str) -> dict[str, int]:
    """A model's version labels; {} when labels.json is malformed (as the predictor reads it)."""
    try:
        return store.read_labels(model_name)
    except StoreError:
        return {}


def model_entries(store: ModelStore) -> list[dict[str, Any]]:
    """Every numbered version of every model, newest first; broken ones say why."""
    entries: list[dict[str, Any]] = []
    for name in store.model_names():
        labels: dict[int, list[str]] = {}
        for label, labelled in sorted(model_labels(store, name).items()):
            labels.setdefault(labelled, []).append(label)
        reports, kept = gate_reports(store, name), measured_versions(store, name)
        for version in reversed(store.list_versions(name)):
            try:
                found = store.verify_version(name, version)
            except BrokenVersion as exc:
                entries.append(
                    {"model_name": name, "version": version, "status": "broken",
                     "reason": exc.reason, "metadata": None, "labels": labels.get(version, [])}
                )  # fmt: skip
                continue
            entries.append(
                {"model_name": name, "version": version, "status": "ok",
                 "reason": None, "metadata": dict(found.metadata),
                 "labels": labels.get(version, []), "gate": version_gate(store, found, reports, kept)}
            )  # fmt: skip
    return entries


@bp.get("/v1/models")
def list_models() -> Response:
    """Published versions with their metadata (``status: broken`` when files do not match)."""
    store = services().store
    labels = {name: model_labels(store, name) for name in store.model_names()}
    return jsonify({"models": model_entries(store), "labels": labels})


# --- operations -------------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


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


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the store is writable, the job runner is alive and (local executor) its
    pool of job processes has been warm, so no job waits for TensorFlow (else 503)."""
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
    return jsonify({"status": "ready", "checks": checks})


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text format."""
    return metrics.metrics_response(services().book)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document())
