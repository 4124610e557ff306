"""A sweep's results as they are now, read only: its trials, the best one, the CSV table.

Between two controller passes a trial's job may have moved on, so every reader (the REST
answers, the plots, a promotion) first lays the jobs' current states over the record's
trials (``live_trials``). Nothing here writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from datetime import datetime
from typing import Any

from trainer_service.errors import JobNotFound
from trainer_service.lifecycle import TrialState
from trainer_service.runner.book import Job, JobBook
from trainer_service.sweeps.records import SweepRecord, Trial
from trainer_service.sweeps.spec import trial_floor, with_floor


def following(record: SweepRecord, trial: Trial, job: Job) -> Trial:
    """The released trial as its job is now, with the job's outcome once it ended."""
    state = TrialState.following(job.state)
    update: dict[str, Any] = {"state": state, "started_at": job.started_at, "submitted": True}
    if state is TrialState.CANCELLED and trial.stopping_early is not None:
        update.update(state=TrialState.EARLY_STOPPED, reason=trial.stopping_early)
    if state.finished:
        update.update(
            metrics=with_floor(job.metrics, trial_floor(record.spec, trial.assignments)),
            model_version=job.model_version,
            error=job.error,
            finished_at=job.finished_at,
        )
    return trial.model_copy(update=update)


def live_trials(record: SweepRecord, book: JobBook) -> list[Trial]:
    """The record's trials, each unfinished one as its job is now."""
    return [_live(record, trial, book) for trial in record.trials]


def _live(record: SweepRecord, trial: Trial, book: JobBook) -> Trial:
    if not trial.state.finished and trial.job_id is not None and trial.submitted:
        with contextlib.suppress(JobNotFound):  # its state and outcome: no progress file read
            return following(record, trial, book.stored(trial.job_id))
    return trial


def objective_value(record: SweepRecord, trial: Trial) -> float | None:
    """The trial's objective metric, when it succeeded and reported a finite one."""
    if trial.state is not TrialState.SUCCEEDED or not trial.metrics:
        return None
    value = trial.metrics.get(record.spec.objective.objectiveMetricName)
    return float(value) if value is not None and math.isfinite(value) else None


def best_trial(record: SweepRecord, trials: list[Trial]) -> Trial | None:
    """The succeeded trial with the best objective (the lower number on a tie)."""
    scored = [(value, t) for t in trials if (value := objective_value(record, t)) is not None]
    pick = min if record.spec.objective.type == "minimize" else max
    return pick(scored, key=lambda pair: pair[0])[1] if scored else None


def trial_limit(record: SweepRecord, trial: Trial) -> float:
    """The architecture's in-domain MSE limit for this trial's mid_range and num_neurons."""
    return trial_floor(record.spec, trial.assignments)


def trial_seconds(trial: Trial) -> float | None:
    """The trial's own run time: its job's start to its end."""
    if trial.started_at is None or trial.finished_at is None:
        return None
    started = datetime.fromisoformat(trial.started_at)
    return (datetime.fromisoformat(trial.finished_at) - started).total_seconds()


def trials_csv(record: SweepRecord, trials: list[Trial]) -> str:
    """The trials table as CSV: one column per varied parameter and per metric."""
    names = [parameter.name for parameter in record.spec.parameters]
    metrics = record.spec.objective.metric_names
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["number", "job_id", "state", *names, *metrics, "mse_limit", "model_version",
         "seconds", "error", "reason"]
    )  # fmt: skip
    for trial in trials:
        values = trial.metrics or {}
        seconds = trial_seconds(trial)
        writer.writerow(
            [trial.number, trial.job_id or "", trial.state.value,
             *(trial.assignments[name] for name in names),
             *(_cell(values.get(name)) for name in metrics),
             _cell(trial_limit(record, trial)), trial.model_version or "",
             "" if seconds is None else f"{seconds:.2f}", trial.error or "",
             trial.reason or trial.stopping_early or ""]
        )  # fmt: skip
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
