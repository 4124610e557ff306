"""The sweep controller: one idempotent pass that moves every unfinished sweep forward.

``reconcile_sweeps`` reads each unfinished sweep and does what is due: copies a finished
trial's outcome into it, stops a running trial early when the median rule says so, asks the
search algorithm for new trials and releases them as jobs (``parallelTrialCount`` at a time,
``maxTrialCount`` in all, and never more queued trials than a share of the job queue's bound,
so single jobs still get in), skips a trial whose floor already misses the goal, cancels the
rest of a sweep that was cancelled, failed too often or reached its goal, applies a client's
new trial counts (which continue a finished sweep), and ends a sweep whose trials have all
ended. It keeps no state of its own: call it as often as you like, after any crash. The job
runner calls it when a job ends and every couple of seconds (``SweepTicker``); with the
``local`` executor the API also calls it right after each request (with ``kubernetes`` only
the replica elected to finalize jobs runs it, so a sweep's record has one writer).

It uses the executor only through ``submit`` (with a job id it chose) and ``cancel``, and the
job book through ``get``, ``artifact_path`` and ``epochs_since``, whatever runs the jobs.
Crash safety: a trial's job id is recorded in the sweep *before* the job is submitted under
that id, and ``submit`` returns the existing job for an id it has; a pass that dies between
the two submits the same job next time, so no job is orphaned and none runs twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from squarenet.store import ModelStore, write_json_atomic
from trainer_service.errors import JobAlreadyFinished, JobNotFound, PlotNotFound, QueueFull
from trainer_service.lifecycle import SWEEP_MOVES, RunState, TrialState, may_move
from trainer_service.runner.book import Job, JobBook
from trainer_service.runner.records import trial_job_id, utc_now
from trainer_service.sweeps.errors import SweepAlreadyFinished
from trainer_service.sweeps.records import (
    SweepFiles,
    SweepRecord,
    Trial,
    new_sweep_id,
    sweep_model_name,
)
from trainer_service.sweeps.results import following
from trainer_service.sweeps.search import Curve, ask, stop_early
from trainer_service.sweeps.spec import (
    SweepPatch,
    SweepSpec,
    field_error,
    plan_sweep,
    trial_floor,
    trial_params,
    with_floor,
)

if TYPE_CHECKING:
    from trainer_service.runner.executor import Executor

_log = logging.getLogger("squarenet.trainer.sweeps")

# trials hold at most this fraction of the job queue's bound, whatever the sweeps ask for
TRIAL_QUEUE_SHARE = 0.5
# a trial whose job was interrupted (on Kubernetes an eviction, drain or pre-emption of its
# pod; locally a job lost with its runner more than ``MAX_RESUMES`` times) runs again once:
# a trial interrupted twice ends FAILED instead of costing the cluster a third run
MAX_ATTEMPTS = 2
STOP_CANCELLED = "cancelled"
STOP_FAILED = "failed"
STOP_GOAL = "goal"
FIT_FILE = "fit.png"
EPOCHS_FILE = "epochs.json"
TICK_SECONDS = 2.0  # the runner's periodic pass; a job's end triggers one at once
_PASS = threading.local()  # a pass that cancels a job may hear of its end: no pass inside one


class NotLeading(Exception):
    """This process may have lost the right to change sweeps (its finalizer's Lease)."""


def _check_leading(executor: Executor) -> None:
    """Raise ``NotLeading`` unless the job book's writer still leads; checked right before
    each release, cancel and sweep write, so a replica that hung or paused past its Lease
    changes nothing after it (the next leader's pass redoes what was due, idempotently)."""
    if not executor.book.still_leading():
        raise NotLeading


def sweep_files(executor: Executor) -> SweepFiles:
    """The sweep records of the executor's store, locked the way its job book is."""
    return SweepFiles(executor.book.store, local_lock=executor.book.local_lock)


def create_sweep(executor: Executor, spec: SweepSpec) -> SweepRecord:
    """Check ``spec`` (ValidationError when its trials cannot run), record it, start it."""
    sweep_id = new_sweep_id()
    effective = plan_sweep(spec, sweep_model_name(sweep_id))
    record = SweepRecord(
        id=sweep_id, state=RunState.QUEUED, spec=effective, trials=[], created_at=utc_now()
    )
    files = sweep_files(executor)
    files.write(record)  # a new file: no other writer knows this id yet
    _log.info("sweep %s created: %s, up to %s trials", sweep_id,
              effective.algorithm.algorithmName, effective.maxTrialCount)  # fmt: skip
    return _after_request(executor, files, record)


def request_cancel(executor: Executor, sweep_id: str) -> SweepRecord:
    """Leave a cancel request (no more trials, running ones cancelled); 409 when finished."""
    files = sweep_files(executor)
    record = files.existing(sweep_id)
    if record.state.finished:
        raise SweepAlreadyFinished(f"sweep {sweep_id} has already finished: {record.state}")
    files.cancel_path(sweep_id).touch()
    _log.info("sweep %s cancel requested", sweep_id)
    return _after_request(executor, files, record)


def request_patch(executor: Executor, sweep_id: str, patch: SweepPatch) -> SweepRecord:
    """Leave new trial counts for the controller (which continues a finished sweep with them).

    409 when the sweep was cancelled or failed; 422 naming ``maxTrialCount`` when it is below
    the trials the sweep has, or when a finished sweep would get no new trial from it.
    """
    files = sweep_files(executor)
    record = files.existing(sweep_id)
    if _ended_for_good(record):
        raise SweepAlreadyFinished(
            f"sweep {sweep_id} ended {record.state}: only a running or succeeded sweep continues"
        )
    pending = _read_patch(files, sweep_id) or SweepPatch.model_construct()
    wanted = patch.maxTrialCount or pending.maxTrialCount or record.spec.maxTrialCount or 0
    have, planned, message = len(record.trials), record.spec.maxTrialCount, None
    if wanted < have:
        message = f"the sweep has {have} trials already: give at least {have}"
    elif record.state.finished and wanted <= have:
        message = f"the sweep ended with its {have} trials: give more than {have} to continue it"
    elif record.spec.algorithm.algorithmName == "grid" and wanted > (planned or 0):
        message = f"the grid has {planned} points: a grid sweep cannot grow"
    if message:
        raise field_error("maxTrialCount", message, wanted)
    merged = SweepPatch(
        maxTrialCount=wanted,
        parallelTrialCount=patch.parallelTrialCount or pending.parallelTrialCount,
    )
    write_json_atomic(files.patch_path(sweep_id), merged.model_dump(mode="json"))
    _log.info("sweep %s patch requested: %s", sweep_id, merged.model_dump(exclude_none=True))
    return _after_request(executor, files, record)


def _after_request(executor: Executor, files: SweepFiles, record: SweepRecord) -> SweepRecord:
    """The record as the answer shows it: with the ``local`` executor, after a pass."""
    if files.local_lock:
        reconcile_sweeps(executor)
    return files.read(record.id) or record


def _read_patch(files: SweepFiles, sweep_id: str) -> SweepPatch | None:
    try:
        return SweepPatch.model_validate_json(files.patch_path(sweep_id).read_bytes())
    except (OSError, ValidationError):
        return None


class SweepTicker:
    """The job runner's side: a pass when a job ends, and one every ``TICK_SECONDS``."""

    def __init__(self, store: ModelStore, executor: Executor) -> None:
        self.store = store
        self.executor = executor
        self.next_pass = 0.0

    def job_finished(self, job: Job) -> None:
        """A job ended (the job book's listener): its sweep moves on now."""
        if job.sweep_id is not None:
            self.next_pass = 0.0
            self.tick()

    def tick(self) -> None:
        """Run a pass when one is due; never let a failure reach the runner's loop."""
        now = time.monotonic()
        if now < self.next_pass:
            return
        self.next_pass = now + TICK_SECONDS
        try:
            reconcile_sweeps(self.executor)
        except Exception:  # the store away, or a bug: the runner's own work goes on
            _log.exception("sweep controller: pass failed, retrying")


def reconcile_sweeps(executor: Executor) -> None:
    """Bring every unfinished sweep one step closer to its end (idempotent; see the module)."""
    files = sweep_files(executor)
    if not files.root.is_dir() or getattr(_PASS, "active", False):
        return  # no sweep was ever made (the periodic call costs one stat), or inside a pass
    _PASS.active = True
    try:
        with files.lock():
            _pass(files, executor)
    except NotLeading:
        _log.warning("sweep controller: no longer leading, pass stopped")
    finally:
        _PASS.active = False


@contextlib.contextmanager
def _alone(sweep_id: str) -> Iterator[None]:
    """One sweep's trouble stops neither the others nor the runner: it waits for the next pass
    (a lost lead stops the whole pass)."""
    try:
        yield
    except NotLeading:
        raise
    except Exception:
        _log.exception("sweep %s: reconcile failed, retrying on the next pass", sweep_id)


def _pass(files: SweepFiles, executor: Executor) -> None:
    records = files.unsettled()
    observed = []
    for record in records:
        current = _patched(files, record)
        with _alone(record.id):  # on an error the sweep stays as it was
            current = _decide(files, executor, _observe(executor, current))
        observed.append(current)
    queued = sum(trial.state is TrialState.QUEUED for record in observed for trial in record.trials)
    budget = max(1, int(executor.book.max_queued * TRIAL_QUEUE_SHARE)) - queued
    for before, current in zip(records, observed, strict=True):
        with _alone(before.id):
            released, budget = _release(files, executor, current, budget)
            after = _settle(released)
            _check_leading(executor)
            if after != before:
                files.write(after)
            files.patch_path(before.id).unlink(missing_ok=True)  # applied and written


def _patched(files: SweepFiles, record: SweepRecord) -> SweepRecord:
    """The record with a client's new trial counts; a finished sweep given more continues
    (Katib's LongRunning resume), and only trials after this point can reach the goal again."""
    patch = _read_patch(files, record.id)
    if patch is None or _ended_for_good(record):
        return record
    counts = patch.model_dump(exclude_none=True)
    if counts.get("maxTrialCount", len(record.trials)) < len(record.trials):
        counts.pop("maxTrialCount")
    record = record.model_copy(update={"spec": record.spec.model_copy(update=counts)})
    if record.state.finished and (record.spec.maxTrialCount or 0) > len(record.trials):
        _log.info("sweep %s continues up to %s trials", record.id, record.spec.maxTrialCount)
        record = record.model_copy(
            update={"state": RunState.RUNNING, "finished_at": None, "stop_reason": None,
                    "message": None, "goal_from": len(record.trials)}
        )  # fmt: skip
    return record


# --- one sweep ------------------------------------------------------------------------------


def _observe(executor: Executor, record: SweepRecord) -> SweepRecord:
    """Each released trial takes its job's state; finished ones keep its outcome."""
    trials = [_observe_trial(executor, record, trial) for trial in record.trials]
    return record.model_copy(update={"trials": trials})


def _observe_trial(executor: Executor, record: SweepRecord, trial: Trial) -> Trial:
    if trial.job_id is None or trial.state.finished:
        return trial
    if not trial.submitted and record.stop_reason is None:
        return _submit(executor, record, trial)  # the intent of a pass that died: finish it
    try:
        job = executor.book.get(trial.job_id)
    except JobNotFound:
        if trial.submitted:
            return _ended(trial, TrialState.FAILED, error="its job record is gone")
        return _ended(trial, TrialState.CANCELLED)  # never submitted, and now never will be
    return _follow(record, trial, job)


def _follow(record: SweepRecord, trial: Trial, job: Job) -> Trial:
    """The trial as its job is now; an interrupted job's trial goes back to PENDING."""
    retry = (
        job.state is RunState.FAILED
        and job.end_reason is not None
        and job.end_reason.by_no_fault_of_its_own
        and len(trial.earlier_job_ids) + 1 < MAX_ATTEMPTS
        and record.stop_reason is None
    )
    if not retry:
        return following(record, trial, job)
    _log.info("sweep %s trial %d: job %s interrupted, running it again", record.id,
              trial.number, job.id)  # fmt: skip
    return trial.model_copy(
        update={"state": TrialState.PENDING, "job_id": None, "submitted": False,
                "started_at": None, "earlier_job_ids": [*trial.earlier_job_ids, job.id]}
    )  # fmt: skip


def _decide(files: SweepFiles, executor: Executor, record: SweepRecord) -> SweepRecord:
    """Keep the books: started, too many failures, the goal, stopping; stop trials early;
    copy finished trials' artefacts."""
    for trial in record.trials:
        if trial.state.finished and trial.job_id is not None:
            _keep_artefacts(files, executor.book, record.id, trial)
    update: dict[str, Any] = {}
    if record.stop_reason is None and files.cancel_path(record.id).exists():
        update["stop_reason"] = STOP_CANCELLED
    if record.state is RunState.QUEUED and any(
        trial.started_at is not None or trial.state.finished for trial in record.trials
    ):
        update.update(state=RunState.RUNNING, started_at=utc_now())
    failed = sum(trial.state is TrialState.FAILED for trial in record.trials)
    limit = record.spec.maxFailedTrialCount
    stopping = record.stop_reason or update.get("stop_reason")
    reached = _goal_reached(record)
    if stopping is None and reached is not None:
        update.update(stop_reason=STOP_GOAL, message=reached)
        _log.info("sweep %s: %s; cancelling the rest", record.id, reached)
    elif stopping is None and limit is not None and failed > limit:
        update.update(
            stop_reason=STOP_FAILED,
            message=f"{failed} trials failed, more than maxFailedTrialCount ({limit})",
        )
        _log.warning("sweep %s: %s; cancelling the rest", record.id, update["message"])
    record = record.model_copy(update=update)
    if record.stop_reason is not None:
        return record.model_copy(
            update={"trials": [_stop(executor, record, t) for t in record.trials]}
        )
    if record.spec.earlyStopping is not None:
        record = _stop_early(files, executor, record)
    return record


def _goal_reached(record: SweepRecord) -> str | None:
    """How the goal was reached, by the first trial since the last continue that did."""
    objective = record.spec.objective
    if objective.goal is None:
        return None
    name = objective.objectiveMetricName
    for trial in record.trials[record.goal_from :]:
        value = (trial.metrics or {}).get(name)
        if trial.state is TrialState.SUCCEEDED and value is not None and objective.reaches(value):
            sign = "<=" if objective.type == "minimize" else ">="
            return f"trial {trial.number} reached the goal: {name} {value:.6g} {sign} {objective.goal:g}"
    return None


def _stop_early(files: SweepFiles, executor: Executor, record: SweepRecord) -> SweepRecord:
    """Cancel the job of each running trial the median rule gives up on."""
    running = [
        t
        for t in record.trials
        if t.state is TrialState.RUNNING and t.job_id is not None and t.stopping_early is None
    ]
    if not running:
        return record
    finished = _kept_curves(files, record, TrialState.SUCCEEDED)
    for trial in running:
        assert trial.job_id is not None  # noqa: S101 - filtered above
        with contextlib.suppress(JobNotFound, JobAlreadyFinished):  # it ended first: as it was
            reason = stop_early(
                record, _curve(executor.book.epochs_since(trial.job_id, 0)), finished
            )
            if reason is not None:
                _log.info("sweep %s trial %d: %s", record.id, trial.number, reason)
                _check_leading(executor)
                executor.cancel(trial.job_id)  # the runner confirms; the next pass sees it
                record = _with_trial(record, trial.model_copy(update={"stopping_early": reason}))
    return record


def _curve(rows: list[dict[str, Any]] | list[dict[str, float | None]]) -> Curve:
    """Epoch -> training loss, from a job's epoch rows."""
    curve: Curve = {}
    for row in rows:
        epoch, loss = row.get("epoch"), row.get("loss")
        if isinstance(epoch, int | float) and isinstance(loss, int | float):
            curve[int(epoch)] = float(loss)
    return curve


def _kept_curves(files: SweepFiles, record: SweepRecord, state: TrialState) -> dict[int, Curve]:
    """The kept loss curves of the record's trials in ``state``, by number."""
    return {
        t.number: _curve(read_epochs(files, record.id, t.number))
        for t in record.trials
        if t.state is state
    }


def _stop(executor: Executor, record: SweepRecord, trial: Trial) -> Trial:
    """A trial of a stopping sweep: never released if PENDING, its job cancelled if active."""
    if trial.state is TrialState.PENDING:
        return _ended(trial, TrialState.CANCELLED)
    if not trial.state.active or trial.job_id is None:
        return trial
    _check_leading(executor)
    try:
        job = executor.cancel(trial.job_id)  # the runner confirms later; we look again
    except JobAlreadyFinished as exc:
        job = exc.job
    except JobNotFound:
        return _ended(trial, TrialState.CANCELLED)
    return _follow(record, trial, job) if job.state.finished else trial


def _release(
    files: SweepFiles, executor: Executor, record: SweepRecord, budget: int
) -> tuple[SweepRecord, int]:
    """Submit PENDING trials, then new ones from the search algorithm, while the sweep's
    parallel slots, ``maxTrialCount`` and the queue budget allow."""
    if record.stop_reason is not None:
        return record, budget
    active = sum(trial.state.active for trial in record.trials)
    limit = record.spec.maxTrialCount or 0
    while active < record.spec.parallelTrialCount and budget > 0:
        trial = next((t for t in record.trials if t.state is TrialState.PENDING), None)
        if trial is None:
            if len(record.trials) >= limit:
                break
            record, trial = _ask(files, record)
            if trial.state.finished:
                continue  # skipped or unrunnable: no job, no slot
        intent = trial.model_copy(
            update={
                "state": TrialState.QUEUED,
                "job_id": trial_job_id(record.id, trial.number, len(trial.earlier_job_ids)),
                "submitted": False,
            }
        )
        record = _with_trial(record, intent)
        _check_leading(executor)
        files.write(record)  # the intent first: a crash from here on resubmits the same id
        submitted = _submit(executor, record, intent)
        record = _with_trial(record, submitted)
        if not submitted.submitted:
            break  # the queue is full: the intent stays and the next pass submits it
        active += 1
        budget -= 1
    return record, budget


def _ask(files: SweepFiles, record: SweepRecord) -> tuple[SweepRecord, Trial]:
    """A new trial from the search algorithm, appended to the record: PENDING, or already
    ended SKIPPED (its floor misses the goal) or FAILED (it breaks a job rule)."""
    asked = ask(record, _kept_curves(files, record, TrialState.EARLY_STOPPED))
    trial = Trial(
        number=len(record.trials), assignments=asked.assignments, system_attrs=asked.system_attrs
    )
    floor = trial_floor(record.spec, trial.assignments)
    goal = record.spec.objective.goal
    said = ", ".join(f"{name}={value}" for name, value in record.ordered(trial))
    if record.spec.skips_below_floor and goal is not None and floor > goal:
        reason = (
            f"its floor {floor:.6g} ({said}) is above the goal {goal:g}: no training reaches it"
        )
        trial = _ended(trial, TrialState.SKIPPED).model_copy(
            update={"reason": reason, "metrics": with_floor(None, floor)}
        )
        _log.info("sweep %s trial %d skipped: %s", record.id, trial.number, reason)
    else:
        try:
            trial_params(record.spec, trial.assignments, record.model_name)
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            trial = _ended(trial, TrialState.FAILED, error=f"{said} breaks a job rule: {error}")
    record = record.model_copy(
        update={"trials": [*record.trials, trial], "study_attrs": asked.study_attrs}
    )
    return record, trial


def _submit(executor: Executor, record: SweepRecord, trial: Trial) -> Trial:
    """Submit the trial's job under its recorded id (idempotent); unchanged when the queue is full."""
    assert trial.job_id is not None  # noqa: S101 - only trials with an intent get here
    params = trial_params(record.spec, trial.assignments, record.model_name)
    _check_leading(executor)
    try:
        job = executor.submit(params, job_id=trial.job_id, sweep_id=record.id)
    except QueueFull:
        return trial
    _log.info("sweep %s trial %d released as job %s", record.id, trial.number, job.id)
    return trial.model_copy(update={"submitted": True, "state": TrialState.following(job.state)})


def _settle(record: SweepRecord) -> SweepRecord:
    """End the sweep once every trial has ended and no more are due."""
    if record.state.finished or not all(trial.state.finished for trial in record.trials):
        return record
    if record.stop_reason is None and len(record.trials) < (record.spec.maxTrialCount or 0):
        return record  # more trials to ask for (the next pass, when the queue had no room)
    succeeded = any(trial.state is TrialState.SUCCEEDED for trial in record.trials)
    message = record.message
    if record.stop_reason == STOP_GOAL:
        state = RunState.SUCCEEDED
    elif record.stop_reason == STOP_CANCELLED:
        state = RunState.CANCELLED
    elif record.stop_reason == STOP_FAILED or not succeeded:
        state = RunState.FAILED
        message = message or "no trial succeeded"
    else:
        state = RunState.SUCCEEDED
    _log.info("sweep %s %s%s", record.id, state, f": {message}" if message else "")
    return record.model_copy(
        update={
            "state": state,
            "message": message,
            "finished_at": utc_now(),
            "started_at": record.started_at or utc_now(),
        }
    )


# --- helpers --------------------------------------------------------------------------------


def _ended_for_good(record: SweepRecord) -> bool:
    """Cancelled or failed: a final state no PATCH moves on from (only a succeeded one)."""
    return record.state.finished and not may_move(SWEEP_MOVES, record.state, RunState.RUNNING)


def _ended(trial: Trial, state: TrialState, error: str | None = None) -> Trial:
    return trial.model_copy(update={"state": state, "error": error, "finished_at": utc_now()})


def _with_trial(record: SweepRecord, trial: Trial) -> SweepRecord:
    trials = [trial if t.number == trial.number else t for t in record.trials]
    return record.model_copy(update={"trials": trials})


def _keep_artefacts(files: SweepFiles, book: JobBook, sweep_id: str, trial: Trial) -> None:
    """Copy a finished trial's figure and epochs next to the sweep (once), for its plots."""
    folder = files.trial_dir(sweep_id, trial.number)
    done = folder / EPOCHS_FILE
    if done.exists() or trial.job_id is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PlotNotFound, JobNotFound):
        shutil.copyfile(book.artifact_path(trial.job_id, FIT_FILE), folder / FIT_FILE)
    rows: list[dict[str, float | None]] = []
    with contextlib.suppress(JobNotFound):
        rows = book.epochs_since(trial.job_id, 0)
    write_json_atomic(done, rows)  # written last: its presence says the copy is complete


def read_epochs(files: SweepFiles, sweep_id: str, number: int) -> list[dict[str, Any]]:
    """A finished trial's kept epoch history (empty when there is none)."""
    try:
        rows = json.loads((files.trial_dir(sweep_id, number) / EPOCHS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
