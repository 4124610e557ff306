"""Jobs over REST: submit, list, follow (events, epochs, fit curve, figures) and cancel.

Views only translate HTTP to calls on the executor and its ``JobBook`` and back; every
refusal is raised and leaves through the one problem handler (``problems``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flask import Response, request, send_file, url_for
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, Field

from trainer_service.api import metrics
from trainer_service.api.events import EVENT_SCHEMA, event_stream, job_events, last_event_id
from trainer_service.api.http import PNG, TOKEN, RunQuery, answer, described, media, refusals
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.errors import PlotNotFound, QueueFull
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import Job
from trainer_service.runner.records import JOB_ID_PATTERN
from trainer_service.training.fit_curve import FIT_DATA

PLOT_NAMES = ("loss", "fit")
NO_CACHE = {"Cache-Control": "no-cache"}

bp = APIBlueprint("trainer", __name__)
log = logging.getLogger("squarenet.trainer.api")


class JobPath(BaseModel):
    """The job a route is about (an id that is not well formed is simply not found: 404)."""

    job_id: str = Field(
        description="A job id as returned by POST /v1/jobs.",
        json_schema_extra={"pattern": JOB_ID_PATTERN.pattern},
    )


class JobPlotPath(JobPath):
    """A job's figure: ``loss`` per epoch, or the ``fit`` in and out of the domain."""

    plot: str = Field(json_schema_extra={"enum": list(PLOT_NAMES)})


class JobQuery(RunQuery):
    """``GET /v1/jobs`` narrowed by state, count and sweep."""

    sweep: str | None = Field(None, description="Only the trials of this sweep.")


class JobList(BaseModel):
    """The body of ``GET /v1/jobs``: every job, newest first."""

    jobs: list[Job]


class EpochRow(BaseModel):
    """One finished epoch's losses (val_loss null without a validation split)."""

    epoch: int
    loss: float | None
    val_loss: float | None


class EpochHistory(BaseModel):
    """A job's loss and val_loss per finished epoch (what the event stream replays)."""

    job_id: str
    epochs: int = Field(description="Epochs planned.")
    history: list[EpochRow]


class Points(BaseModel):
    """A sample of the training rows."""

    x: list[float]
    y: list[float]


class WorstExtrapolation(BaseModel):
    """Where outside the domain the prediction is furthest from x², and by how much."""

    x: float
    error: float


class FitCurve(BaseModel):
    """``fit.png`` as numbers: x² and the prediction over twice the domain, training rows."""

    job_id: str
    model_version: int | None
    domain: list[float] = Field(min_length=2, max_length=2)
    x: list[float]
    target: list[float] = Field(description="x² at each x.")
    prediction: list[float] = Field(description="The published model at each x.")
    data: Points
    max_extrapolation_error: WorstExtrapolation | None = None


def capped(params: TrainingParams, cap: int) -> TrainingParams:
    """``max_train_seconds`` within this trainer's cap: a default is lowered, a request refused."""
    if params.max_train_seconds <= cap:
        return params
    if "max_train_seconds" not in params.model_fields_set:
        return params.model_copy(update={"max_train_seconds": cap})
    message = f"must be at most {cap} on this trainer (its --max-train-seconds)"
    raise Problem.invalid("max_train_seconds", message)


@bp.post(
    "/v1/jobs",
    operation_id="submitJob",
    security=TOKEN,
    responses={
        202: described(Job, "Queued; follow it at Location.", "Location"),
        **refusals(400, 401, 403, 413, 415, 422, 429, 503),
    },
)
def submit_job(body: TrainingParams) -> Response:
    """Queue a training job.

    Every field is optional; an empty body means every default. The job runs in the job
    runner, never in this worker.
    """
    params = capped(body, services().settings.max_train_seconds)
    try:
        job = services().executor.submit(params)
    except QueueFull:
        metrics.JOBS_REJECTED.inc()
        raise
    metrics.JOBS_SUBMITTED.inc()
    log.info("job %s submitted epochs=%d n_samples=%d", job.id, params.epochs, params.n_samples)
    return answer(job, 202, {"Location": url_for("trainer.get_job", job_id=job.id)})


@bp.get("/v1/jobs", operation_id="listJobs", responses={200: JobList, **refusals(422)})
def list_jobs(query: JobQuery) -> Response:
    """Every job, newest first (``state``, ``sweep`` and ``limit`` narrow it)."""
    jobs = services().book.list()
    if query.state is not None:
        jobs = [job for job in jobs if job.state is query.state]
    if query.sweep is not None:
        jobs = [job for job in jobs if job.sweep_id == query.sweep]
    return answer(JobList(jobs=jobs[: query.limit]))


@bp.get("/v1/jobs/<job_id>", operation_id="getJob", responses={200: Job, **refusals(404)})
def get_job(path: JobPath) -> Response:
    """One job as it is now."""
    return answer(services().book.get(path.job_id))


@bp.post(
    "/v1/jobs/<job_id>/cancel",
    operation_id="cancelJob",
    security=TOKEN,
    responses={
        200: Job,
        202: described(Job, "Cancel recorded; the job as it is while its runner stops it."),
        **refusals(401, 403, 404, 409),
    },
)
def cancel_job(path: JobPath) -> Response:
    """Cancel a job (stops its training process) and answer at once.

    200 when it is CANCELLED already (it was queued); 202 with the job as it is while its
    runner stops it: follow the job (GET or its events) to see it end.
    """
    job = services().executor.cancel(path.job_id)
    log.info("job %s cancel answered state=%s", job.id, job.state)
    return answer(job, 200 if job.state is RunState.CANCELLED else 202)


@bp.get(
    "/v1/jobs/<job_id>/events",
    operation_id="streamJobEvents",
    responses={
        200: media(
            "text/event-stream",
            "`event: epoch` data {epoch, epochs, loss, val_loss} (id = epoch; Last-Event-ID "
            "resumes), then `event: state` data the Job.",
            EVENT_SCHEMA,
        ),
        **refusals(404, 503),
    },
)
def job_event_stream(path: JobPath) -> Response:
    """Server-sent events: `epoch` per finished epoch, then the final `state`."""
    svc = services()
    svc.book.get(path.job_id)  # 404 now, before the stream has started
    events = job_events(
        svc.book,
        path.job_id,
        after=last_event_id(request.headers.get("Last-Event-ID")),
        poll_interval=svc.settings.sse_poll_interval,
        keepalive=svc.settings.sse_keepalive,
    )
    return event_stream(svc.streams, events)


@bp.get(
    "/v1/jobs/<job_id>/plots/<plot>.png",
    operation_id="getJobPlot",
    responses={200: PNG, **refusals(404)},
)
def job_plot(path: JobPlotPath) -> Response:
    """A figure of the job: loss per epoch, or the fit in and out of domain."""
    book = services().book
    if path.plot not in PLOT_NAMES:
        book.get(path.job_id)  # an unknown job is the first thing to say
        raise PlotNotFound(path.job_id, f"{path.plot}.png")
    image: Path = book.artifact_path(path.job_id, f"{path.plot}.png")
    return send_file(image, mimetype="image/png", max_age=0)


@bp.get(
    "/v1/jobs/<job_id>/epochs",
    operation_id="getJobEpochs",
    responses={200: EpochHistory, **refusals(404)},
)
def job_epochs(path: JobPath) -> Response:
    """The job's loss and val_loss per finished epoch (what the event stream replays)."""
    book = services().book
    job = book.get(path.job_id)
    rows = book.epochs_since(path.job_id, 0)
    history = EpochHistory(job_id=job.id, epochs=job.progress.epochs, history=rows)
    return answer(history, headers=NO_CACHE)


@bp.get(
    "/v1/jobs/<job_id>/fit", operation_id="getJobFit", responses={200: FitCurve, **refusals(404)}
)
def job_fit(path: JobPath) -> Response:
    """The fit curve of fit.png as numbers (404 until the job has drawn it).

    x² and the prediction over twice the domain, and a sample of the training rows.
    """
    book = services().book
    job = book.get(path.job_id)
    curve = json.loads(book.artifact_path(path.job_id, FIT_DATA).read_text(encoding="utf-8"))
    fit = FitCurve.model_validate({"job_id": job.id, "model_version": job.model_version, **curve})
    return answer(fit, headers=NO_CACHE)
