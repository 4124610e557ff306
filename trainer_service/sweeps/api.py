"""The sweeps' REST routes: thin views over the controller, the records and the plots.

Views translate HTTP to calls and back; refusals are raised (``SweepError``, pydantic's
``ValidationError``, ``Problem``) and leave as problem responses, sweep refusals through this
blueprint's one handler and everything else through the app's.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, request, send_file, url_for
from pydantic import BaseModel, ConfigDict, Field

from trainer_service.api.problems import Problem
from trainer_service.api.views import event_stream, read_json_body, services
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.sweeps.controller import (
    create_sweep,
    request_cancel,
    request_patch,
    sweep_files,
)
from trainer_service.sweeps.errors import SweepError, SweepNotFound, sweep_problem
from trainer_service.sweeps.events import sweep_events
from trainer_service.sweeps.plots import sweep_plot
from trainer_service.sweeps.promote import delete_sweep, promote_best
from trainer_service.sweeps.records import SweepFiles, SweepRecord
from trainer_service.sweeps.spec import SweepPatch, SweepSpec
from trainer_service.sweeps.views import live_trials, sweep_document, trial_document, trials_csv

bp = Blueprint("sweeps", __name__)
log = logging.getLogger("squarenet.trainer.api")
MAX_SWEEP_LIST = 10_000


class SweepQuery(BaseModel):
    """Optional filters of ``GET /v1/sweeps`` (query string); other parameters are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: RunState | None = Field(None, description="Only sweeps in this state.")
    limit: int | None = Field(None, ge=1, le=MAX_SWEEP_LIST, description="At most this many.")


@bp.errorhandler(SweepError)
def _refused(exc: SweepError) -> Response:
    """Sweep refusals as problem responses (404, 409)."""
    return sweep_problem(exc).to_response()


def _files() -> SweepFiles:
    return sweep_files(services().executor)


def _record(sweep_id: str) -> SweepRecord:
    record = _files().read(sweep_id)
    if record is None:
        raise SweepNotFound(sweep_id)
    return record


def _json(document: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(document, ensure_ascii=False, allow_nan=False)
    return Response(text, status=status, mimetype="application/json", headers=headers)


def _document(record: SweepRecord) -> dict[str, object]:
    trials = live_trials(record, services().book)
    return sweep_document(record, trials, _files().read_promotions(record.id))


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


@bp.post("/v1/sweeps")
def submit_sweep() -> Response:
    """Create a sweep (202): checked now; its trials are drawn and released by the controller."""
    spec = SweepSpec.model_validate(read_json_body("the sweep spec", empty={}))
    svc = services()
    record = create_sweep(svc.executor, capped(spec, svc.settings.max_train_seconds))
    log.info("sweep %s submitted trials=%d", record.id, len(record.trials))
    location = url_for("sweeps.get_sweep", sweep_id=record.id)
    return _json(_document(record), 202, {"Location": location})


@bp.get("/v1/sweeps")
def list_sweeps() -> Response:
    """Every sweep, newest first (``?state=`` and ``?limit=`` narrow it)."""
    query = SweepQuery.model_validate(request.args.to_dict())
    records = list(reversed(_files().records()))
    if query.state is not None:
        records = [record for record in records if record.state is query.state]
    if query.limit is not None:
        records = records[: query.limit]
    return _json({"sweeps": [_document(record) for record in records]})


@bp.get("/v1/sweeps/<sweep_id>")
def get_sweep(sweep_id: str) -> Response:
    """One sweep: state, effective spec, trial counts and the current best trial."""
    return _json(_document(_record(sweep_id)))


@bp.patch("/v1/sweeps/<sweep_id>")
def patch_sweep(sweep_id: str) -> Response:
    """New ``maxTrialCount`` / ``parallelTrialCount``: 200 once applied (a succeeded sweep given
    more trials continues), 202 while the controller has yet to apply it."""
    patch = SweepPatch.model_validate(read_json_body("the sweep patch", empty={}))
    svc = services()
    record = request_patch(svc.executor, sweep_id, patch)
    applied = not _files().patch_path(sweep_id).exists()
    log.info("sweep %s patched state=%s applied=%s", sweep_id, record.state, applied)
    return _json(_document(record), 200 if applied else 202)


@bp.delete("/v1/sweeps/<sweep_id>")
def remove_sweep(sweep_id: str) -> Response:
    """Delete a finished sweep and its trials' model (204); promoted versions stay."""
    delete_sweep(_files(), sweep_id)
    return Response(status=204)


@bp.get("/v1/sweeps/<sweep_id>/trials")
def list_trials(sweep_id: str) -> Response:
    """Every trial: its job, state, assignments, metrics and the architecture's MSE limit."""
    record = _record(sweep_id)
    trials = live_trials(record, services().book)
    return _json({"trials": [trial_document(record, trial) for trial in trials]})


@bp.get("/v1/sweeps/<sweep_id>/trials.csv")
def trials_table(sweep_id: str) -> Response:
    """The trials table as CSV (one column per parameter and metric)."""
    record = _record(sweep_id)
    text = trials_csv(record, live_trials(record, services().book))
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="sweep-{sweep_id}.csv"'},
    )


@bp.post("/v1/sweeps/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str) -> Response:
    """Cancel a sweep and answer at once: 200 when every trial has ended already; 202 while
    running ones still stop (the controller settles the sweep as their jobs end; the client
    follows the sweep)."""
    record = request_cancel(services().executor, sweep_id)
    log.info("sweep %s cancel answered state=%s", sweep_id, record.state)
    return _json(_document(record), 200 if record.settled else 202)


@bp.post("/v1/sweeps/<sweep_id>/promote")
def promote_sweep(sweep_id: str) -> Response:
    """Publish the best trial's model as a new version of ``base.model_name`` (201)."""
    promotion = promote_best(_files(), services().book, sweep_id)
    return _json(promotion.model_dump(mode="json"), 201)


@bp.get("/v1/sweeps/<sweep_id>/events")
def sweep_event_stream(sweep_id: str) -> Response:
    """``text/event-stream``: a ``trial`` event per trial state change, then ``state``."""
    svc = services()
    _record(sweep_id)  # 404 now, before the stream has started
    return event_stream(
        sweep_events(
            _files(),
            svc.book,
            sweep_id,
            poll_interval=svc.settings.sse_poll_interval,
            keepalive=svc.settings.sse_keepalive,
        )
    )


@bp.get("/v1/sweeps/<sweep_id>/plots/<plot>.png")
def plot(sweep_id: str, plot: str) -> Response:
    """A figure of the sweep: ``objective``, ``fits`` or ``loss``."""
    record = _record(sweep_id)
    path = sweep_plot(_files(), record, live_trials(record, services().book), plot)
    return send_file(path, mimetype="image/png", max_age=0)
