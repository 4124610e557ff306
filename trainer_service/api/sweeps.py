"""Sweeps over REST: submit, list, follow (trials, CSV, events, plots), patch, cancel, promote.

Views only translate HTTP to calls on the sweep controller (``trainer_service.sweeps``) and
back; every refusal, ``SweepError`` included, is raised and leaves through the one problem
handler (``problems``). A sweep is answered as its record with its trials' jobs laid over it
(``live_trials``), so two workers between two controller passes tell the same story. Field
names are Katib's (camelCase).
"""

# ruff: noqa: N815 - Katib's camelCase field names

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Annotated

from flask import Response, send_file, url_for
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, Field, PlainSerializer

from trainer_service.api.events import (
    EVENT_SCHEMA,
    Poll,
    event_stream,
    format_event,
    polled_stream,
)
from trainer_service.api.http import PNG, TOKEN, RunQuery, answer, described, media, refusals
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.lifecycle import RunState, TrialState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook
from trainer_service.sweeps.controller import (
    create_sweep,
    request_cancel,
    request_patch,
    sweep_files,
)
from trainer_service.sweeps.errors import SweepNotFound
from trainer_service.sweeps.plots import SWEEP_PLOT_NAMES, sweep_plot
from trainer_service.sweeps.promote import delete_sweep, promote_best
from trainer_service.sweeps.records import (
    SWEEP_ID_PATTERN,
    Promotion,
    RecordWatch,
    SweepFiles,
    SweepRecord,
    Trial,
)
from trainer_service.sweeps.results import (
    best_trial,
    live_trials,
    objective_value,
    trial_limit,
    trial_seconds,
    trials_csv,
)
from trainer_service.sweeps.spec import SweepPatch, SweepSpec, Value

bp = APIBlueprint("sweeps", __name__)
log = logging.getLogger("squarenet.trainer.api")


class SweepPath(BaseModel):
    """The sweep a route is about (an id that is not well formed is simply not found: 404)."""

    sweep_id: str = Field(
        description="A sweep id as returned by POST /v1/sweeps.",
        json_schema_extra={"pattern": SWEEP_ID_PATTERN.pattern},
    )


class SweepPlotPath(SweepPath):
    """A sweep's figure (another name is a 404, as for an unknown sweep)."""

    plot: str = Field(json_schema_extra={"enum": list(SWEEP_PLOT_NAMES)})


class ParameterAssignment(BaseModel):
    """One varied hyperparameter's value in a trial."""

    name: str
    value: Value


class MetricValue(BaseModel):
    """One metric of the best trial (null when the job did not report it)."""

    name: str
    value: float | None


class Observation(BaseModel):
    """What the best trial measured: the objective first."""

    metrics: list[MetricValue]


class OptimalTrial(BaseModel):
    """The succeeded trial with the best objective so far."""

    number: int
    jobId: str | None
    modelVersion: int | None
    parameterAssignments: list[ParameterAssignment]
    observation: Observation


# the effective spec as it was stored: a field left unset is absent, not null (the schema
# stays SweepSpec's: the lambda declares no return type)
EffectiveSpec = Annotated[
    SweepSpec,
    PlainSerializer(lambda spec: spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
]


class Sweep(BaseModel):
    """A sweep: state, effective spec, trial counts and the current best trial."""

    id: str
    state: RunState
    message: str | None = Field(description="Why it ended FAILED, when it did.")
    modelName: str = Field(description="The model its trials publish under.")
    spec: EffectiveSpec
    createdAt: str
    startedAt: str | None
    finishedAt: str | None
    trials: int
    trialsPending: int
    trialsQueued: int
    trialsRunning: int
    trialsSucceeded: int
    trialsFailed: int
    trialsCancelled: int
    trialsEarlyStopped: int
    trialsSkipped: int
    currentOptimalTrial: OptimalTrial | None
    promotions: list[Promotion]


class SweepList(BaseModel):
    """The body of ``GET /v1/sweeps``: newest first."""

    sweeps: list[Sweep]


class TrialRow(BaseModel):
    """One trial: its job, state, assignments, metrics and the architecture's MSE limit."""

    number: int
    jobId: str | None
    state: TrialState
    parameterAssignments: list[ParameterAssignment]
    metrics: dict[str, float]
    objective: float | None
    mseLimit: float = Field(
        description="(mid_range / (num_neurons + 1))⁴ / 180: the best in-domain MSE possible."
    )
    modelVersion: int | None
    seconds: float | None = Field(description="The trial's job from start to end.")
    error: str | None
    reason: str | None = Field(description="Why it ended EARLY_STOPPED or SKIPPED.")
    startedAt: str | None
    finishedAt: str | None
    earlierJobIds: list[str] = Field(
        description="Jobs of earlier attempts, interrupted by a trainer restart."
    )


class TrialList(BaseModel):
    """The body of ``GET /v1/sweeps/{id}/trials``."""

    trials: list[TrialRow]


def _assignments(record: SweepRecord, trial: Trial) -> list[ParameterAssignment]:
    return [ParameterAssignment(name=name, value=value) for name, value in record.ordered(trial)]


def trial_row(record: SweepRecord, trial: Trial) -> TrialRow:
    """One row of the trials table (and the data of one ``trial`` event)."""
    return TrialRow(
        number=trial.number,
        jobId=trial.job_id,
        state=trial.state,
        parameterAssignments=_assignments(record, trial),
        metrics=trial.metrics or {},
        objective=objective_value(record, trial),
        mseLimit=trial_limit(record, trial),
        modelVersion=trial.model_version,
        seconds=trial_seconds(trial),
        error=trial.error,
        reason=trial.reason or trial.stopping_early,
        startedAt=trial.started_at,
        finishedAt=trial.finished_at,
        earlierJobIds=trial.earlier_job_ids,
    )


def sweep_of(record: SweepRecord, trials: list[Trial], promotions: list[Promotion]) -> Sweep:
    """The sweep as a client sees it, given its live ``trials`` and ``promotions``."""
    tally = Counter(trial.state for trial in trials)
    best = best_trial(record, trials)
    optimal = None
    if best is not None:
        metrics = best.metrics or {}
        optimal = OptimalTrial(
            number=best.number,
            jobId=best.job_id,
            modelVersion=best.model_version,
            parameterAssignments=_assignments(record, best),
            observation=Observation(
                metrics=[
                    MetricValue(name=name, value=metrics.get(name))
                    for name in record.spec.objective.metric_names
                ]
            ),
        )
    return Sweep(
        id=record.id,
        state=record.state,
        message=record.message,
        modelName=record.model_name,
        spec=record.spec,
        createdAt=record.created_at,
        startedAt=record.started_at,
        finishedAt=record.finished_at,
        trials=len(trials),
        trialsPending=tally[TrialState.PENDING],
        trialsQueued=tally[TrialState.QUEUED],
        trialsRunning=tally[TrialState.RUNNING],
        trialsSucceeded=tally[TrialState.SUCCEEDED],
        trialsFailed=tally[TrialState.FAILED],
        trialsCancelled=tally[TrialState.CANCELLED],
        trialsEarlyStopped=tally[TrialState.EARLY_STOPPED],
        trialsSkipped=tally[TrialState.SKIPPED],
        currentOptimalTrial=optimal,
        promotions=promotions,
    )


def sweep_events(
    files: SweepFiles,
    book: JobBook,
    sweep_id: str,
    *,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
) -> Iterator[str]:
    """SSE text for ``sweep_id`` until it has settled (the caller checked it exists).

    A client that connects late first gets a ``trial`` event for every trial that has left
    PENDING (the replay), then one per change; the final ``state`` is the settled sweep. A
    poll parses the record only when its file was replaced, and reads each unfinished
    trial's job record, never its progress file, so any worker of any replica serves it.
    """
    sent: dict[int, TrialState] = {}
    counter = 0  # the trial events' ids, across polls
    watch = RecordWatch(files, sweep_id)

    def poll() -> Poll:
        nonlocal counter
        record = watch.read()
        if record is None:
            return Poll(last=True)  # deleted meanwhile: nothing more will come
        found = Poll(last=record.settled)
        trials = live_trials(record, book)
        for trial in trials:
            if sent.get(trial.number, TrialState.PENDING) is trial.state:
                continue
            sent[trial.number] = trial.state
            counter += 1
            data = trial_row(record, trial).model_dump_json()
            found.events.append(format_event("trial", data, event_id=counter))
        if found.last:
            final = sweep_of(record, trials, files.read_promotions(sweep_id))
            found.events.append(format_event("state", final.model_dump_json()))
        return found

    return polled_stream(poll, poll_interval=poll_interval, keepalive=keepalive)


def _files() -> SweepFiles:
    return sweep_files(services().executor)


def _record(sweep_id: str) -> SweepRecord:
    record = _files().read(sweep_id)
    if record is None:
        raise SweepNotFound(sweep_id)
    return record


def _sweep(record: SweepRecord) -> Sweep:
    """The sweep as it is now (its trials' jobs may have moved on since the last pass)."""
    trials = live_trials(record, services().book)
    return sweep_of(record, trials, _files().read_promotions(record.id))


def capped(spec: SweepSpec, cap: int) -> SweepSpec:
    """``base.max_train_seconds`` within this trainer's cap, as for a single job."""
    asked = spec.base.get("max_train_seconds")
    if asked is None:
        if TrainingParams.model_fields["max_train_seconds"].default <= cap:
            return spec
        return spec.model_copy(update={"base": {**spec.base, "max_train_seconds": cap}})
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > cap:
        message = f"must be at most {cap} on this trainer (its --max-train-seconds)"
        raise Problem.invalid("base.max_train_seconds", message)
    return spec


@bp.post(
    "/v1/sweeps",
    operation_id="submitSweep",
    security=TOKEN,
    responses={
        202: described(Sweep, "Created; its trials are released as jobs.", "Location"),
        **refusals(400, 401, 403, 413, 415, 422, 503),
    },
)
def submit_sweep(body: SweepSpec) -> Response:
    """Create a sweep: many training jobs from one Katib-style spec.

    Every trial is planned now; a spec that cannot run is a 422 naming the field (a trial
    that breaks the job rules is `trials.<n>.<field>`). The controller releases the trials.
    """
    svc = services()
    record = create_sweep(svc.executor, capped(body, svc.settings.max_train_seconds))
    log.info("sweep %s submitted trials=%d", record.id, len(record.trials))
    location = url_for("sweeps.get_sweep", sweep_id=record.id)
    return answer(_sweep(record), 202, {"Location": location})


@bp.get("/v1/sweeps", operation_id="listSweeps", responses={200: SweepList, **refusals(422)})
def list_sweeps(query: RunQuery) -> Response:
    """Every sweep, newest first (``state`` and ``limit`` narrow it)."""
    records = list(reversed(_files().records()))
    if query.state is not None:
        records = [record for record in records if record.state is query.state]
    return answer(SweepList(sweeps=[_sweep(record) for record in records[: query.limit]]))


@bp.get("/v1/sweeps/<sweep_id>", operation_id="getSweep", responses={200: Sweep, **refusals(404)})
def get_sweep(path: SweepPath) -> Response:
    """One sweep: state, effective spec, trial counts and the current best trial."""
    return answer(_sweep(_record(path.sweep_id)))


@bp.patch(
    "/v1/sweeps/<sweep_id>",
    operation_id="patchSweep",
    security=TOKEN,
    responses={
        200: Sweep,
        202: described(Sweep, "Accepted; the controller applies it on its next pass."),
        **refusals(400, 401, 403, 404, 409, 413, 415, 422, 503),
    },
)
def patch_sweep(path: SweepPath, body: SweepPatch) -> Response:
    """More trials or another parallelism (only maxTrialCount and parallelTrialCount).

    200 once applied: a succeeded sweep given more trials continues where it stopped; 202
    while the controller has yet to apply it.
    """
    record = request_patch(services().executor, path.sweep_id, body)
    applied = not _files().patch_path(path.sweep_id).exists()
    log.info("sweep %s patched state=%s applied=%s", path.sweep_id, record.state, applied)
    return answer(_sweep(record), 200 if applied else 202)


@bp.delete(
    "/v1/sweeps/<sweep_id>",
    operation_id="deleteSweep",
    security=TOKEN,
    responses={204: None, **refusals(401, 403, 404, 409)},
)
def remove_sweep(path: SweepPath) -> Response:
    """Delete a finished sweep and its trials' model (never a promoted version)."""
    delete_sweep(_files(), path.sweep_id)
    return Response(status=204)


@bp.get(
    "/v1/sweeps/<sweep_id>/trials",
    operation_id="listSweepTrials",
    responses={200: TrialList, **refusals(404)},
)
def list_trials(path: SweepPath) -> Response:
    """Every trial with its job, state, assignments, metrics and MSE limit."""
    record = _record(path.sweep_id)
    trials = live_trials(record, services().book)
    return answer(TrialList(trials=[trial_row(record, trial) for trial in trials]))


@bp.get(
    "/v1/sweeps/<sweep_id>/trials.csv",
    operation_id="getSweepTrialsCsv",
    responses={200: media("text/csv", "CSV, one row per trial."), **refusals(404)},
)
def trials_table(path: SweepPath) -> Response:
    """The trials table as CSV (one column per parameter and metric)."""
    record = _record(path.sweep_id)
    return Response(
        trials_csv(record, live_trials(record, services().book)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="sweep-{record.id}.csv"'},
    )


@bp.post(
    "/v1/sweeps/<sweep_id>/cancel",
    operation_id="cancelSweep",
    security=TOKEN,
    responses={
        200: described(Sweep, "Every trial has ended."),
        202: described(Sweep, "Cancel recorded; running trials are still stopping."),
        **refusals(401, 403, 404, 409),
    },
)
def cancel_sweep(path: SweepPath) -> Response:
    """Cancel a sweep: no more trials start, running ones are cancelled.

    Answers at once: 200 when every trial has ended already, 202 while running ones still
    stop; follow the sweep (GET or its events) to see it settle.
    """
    record = request_cancel(services().executor, path.sweep_id)
    log.info("sweep %s cancel answered state=%s", path.sweep_id, record.state)
    return answer(_sweep(record), 200 if record.settled else 202)


@bp.post(
    "/v1/sweeps/<sweep_id>/promote",
    operation_id="promoteSweep",
    security=TOKEN,
    responses={201: Promotion, **refusals(401, 403, 404, 409)},
)
def promote_sweep(path: SweepPath) -> Response:
    """Publish the best trial's model as a new version of base.model_name."""
    return answer(promote_best(_files(), services().book, path.sweep_id), 201)


@bp.get(
    "/v1/sweeps/<sweep_id>/events",
    operation_id="streamSweepEvents",
    responses={
        200: media(
            "text/event-stream",
            "`event: trial` data TrialRow, then `event: state` data Sweep.",
            EVENT_SCHEMA,
        ),
        **refusals(404, 503),
    },
)
def sweep_event_stream(path: SweepPath) -> Response:
    """Server-sent events: `trial` per trial state change, then the final `state`."""
    svc = services()
    _record(path.sweep_id)  # 404 now, before the stream has started
    events = sweep_events(
        _files(),
        svc.book,
        path.sweep_id,
        poll_interval=svc.settings.sse_poll_interval,
        keepalive=svc.settings.sse_keepalive,
    )
    return event_stream(svc.streams, events)


@bp.get(
    "/v1/sweeps/<sweep_id>/plots/<plot>.png",
    operation_id="getSweepPlot",
    responses={200: PNG, **refusals(404)},
)
def plot(path: SweepPlotPath) -> Response:
    """A figure of the sweep: objective per parameter, fits, loss curves."""
    record = _record(path.sweep_id)
    image = sweep_plot(_files(), record, live_trials(record, services().book), path.plot)
    return send_file(image, mimetype="image/png", max_age=0)
