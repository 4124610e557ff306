"""A sweep's results as they are now, read only: its trials, the best one, the CSV table.

The record is the controller's; between two controller passes a trial's job may have moved
on, so every reader (the REST answers, the plots, a promotion) first lays the jobs' current
states over the record's trials (``live_trials``). Nothing here writes.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime

from squarenet.limits import mse_limit
from trainer_service.errors import JobNotFound
from trainer_service.lifecycle import TrialState
from trainer_service.runner.book import JobBook
from trainer_service.sweeps.records import SweepRecord, Trial
from trainer_service.sweeps.spec import trial_floor, trial_params, with_floor


def live_trials(record: SweepRecord, book: JobBook) -> list[Trial]:
    """The record's trials, each unfinished one as its job is now."""
    trials = []
    for trial in record.trials:
        if trial.state.finished or trial.job_id is None or not trial.submitted:
            trials.append(trial)
            continue
        try:
            job = book.stored(trial.job_id)  # its state and outcome: no progress file read
        except JobNotFound:
            trials.append(trial)
            continue
        state = TrialState.following(job.state)
        if state is TrialState.CANCELLED and trial.stopping_early is not None:
            state = TrialState.EARLY_STOPPED
        metrics = job.metrics
        if state.finished:
            metrics = with_floor(metrics, trial_floor(record.spec, trial.assignments))
        trials.append(
            trial.model_copy(
                update={
                    "state": state,
                    "metrics": metrics,
                    "model_version": job.model_version,
                    "error": job.error,
                    "started_at": job.started_at,
                    "finished_at": job.finished_at,
                }
            )
        )
    return trials


def objective_value(record: SweepRecord, trial: Trial) -> float | None:
    """The trial's objective metric, when it succeeded and reported a finite one."""
    if trial.state is not TrialState.SUCCEEDED or not trial.metrics:
        return None
    value = trial.metrics.get(record.spec.objective.objectiveMetricName)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def best_trial(record: SweepRecord, trials: list[Trial]) -> Trial | None:
    """The succeeded trial with the best objective (the lower number on a tie)."""
    best: tuple[float, Trial] | None = None
    for trial in trials:
        value = objective_value(record, trial)
        if value is None:
            continue
        if best is None or record.spec.objective.better(value, best[0]):
            best = (value, trial)
    return best[1] if best else None


def trial_limit(record: SweepRecord, trial: Trial) -> float:
    """The architecture's in-domain MSE limit for this trial's mid_range and num_neurons."""
    params = trial_params(record.spec, trial.assignments, record.model_name)
    return mse_limit(params.mid_range, params.num_neurons)


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
