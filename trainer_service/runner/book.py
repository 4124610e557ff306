"""The job book: every job's record on the store, and the one place its state changes.

Any worker of any replica reads records and the progress files the jobs' processes write.
After submit (QUEUED) a record is written only by ``start``, ``requeue`` and ``finish``, which
the executor's runner calls (the local runner, or the elected Kubernetes finalizer).
``finish`` fences the job's publishing, settles its final state and tells the
``on_finished`` listeners. The newest ``keep_finished`` finished jobs are kept; older ones
(not the versions they published) are forgotten when a job is submitted.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squarenet.store import ModelStore, local_lock
from trainer_service.errors import JobAlreadyFinished, JobNotFound, PlotNotFound, QueueFull
from trainer_service.lifecycle import JOB_MOVES, EndReason, RunState, inferred_end, may_move
from trainer_service.params import TrainingParams
from trainer_service.runner import fence
from trainer_service.runner.records import (
    ARTIFACT_NAMES,
    Job,
    JobFiles,
    Progress,
    ProgressTail,
    Report,
    finite_metrics,
    finite_or_none,
    is_job_id,
    new_job_id,
    utc_now,
)
from trainer_service.runner.slots import JobSlots

__all__ = ["Ending", "Job", "JobBook", "Progress"]


def epoch_rows(report: Report, after: int) -> builtins.list[dict[str, float | None]]:
    """A report's epochs numbered above ``after``: {"epoch", "loss", "val_loss"} each."""
    return [
        {
            "epoch": row["epoch"],
            "loss": finite_or_none(row.get("loss")),
            "val_loss": finite_or_none(row.get("val_loss")),
        }
        for row in report.epochs
        if row["epoch"] > after
    ]


MAX_RESUMES = 3
"""Times a job may go back to the queue after losing its runner before it fails instead."""
BOOK_LOCK = ".lock"
"""The job book's lock file in the jobs folder (``local``): every state change holds it."""
_log = logging.getLogger("trainer_service.runner")


@dataclass(frozen=True)
class Ending:
    """Why the runner ends a job; ``finish`` turns it into the final state.

    ``kind`` is ``exited`` (the process ended by itself: its report decides), ``cancelled``,
    ``time_limit`` or ``failed`` (lost, killed, interrupted: ``reason`` says how to a reader,
    ``end`` to the code that acts on it).
    """

    kind: str
    reason: str = ""
    end: EndReason = EndReason.ERROR


EXITED = Ending("exited")
CANCELLED = Ending("cancelled")
TIME_LIMIT = Ending("time_limit")


class JobBook:
    """Submit, read and settle jobs kept on the store."""

    def __init__(
        self,
        store: ModelStore,
        *,
        max_queued: int = 16,
        keep_finished: int = 1000,
        local_lock: bool = True,
        slots: int | None = None,
    ) -> None:
        if max_queued < 1 or keep_finished < 1:
            raise ValueError("max_queued and keep_finished must be at least 1")
        self.store = store
        self.max_queued = max_queued
        self.keep_finished = keep_finished
        self.local_lock = local_lock
        self.files = JobFiles(store)
        # kubernetes: queued and running jobs each hold one of ``slots`` (None: unbounded here)
        self.slots = JobSlots(self.files.root, slots) if slots is not None else None
        self.on_finished: list[Callable[[Job], None]] = []
        # whether this process may still change job and sweep states: the kubernetes
        # finalizer puts its Lease check here, so that the sweep pass it runs stops releasing
        # trials and writing sweeps once it may have lost the Lease
        self.still_leading: Callable[[], bool] = lambda: True

    def lock(self) -> contextlib.AbstractContextManager[object]:
        """Serialise state changes between the processes and threads of one machine (``local``).

        The ``kubernetes`` executor has a single writer of states (the elected finalizer)
        and takes no lock on a shared volume.
        """
        return (
            local_lock(self.files.root / BOOK_LOCK) if self.local_lock else contextlib.nullcontext()
        )

    # --- submit --------------------------------------------------------------------------

    def new_job(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """A QUEUED job not yet recorded; raise QueueFull when ``max_queued`` jobs wait.

        ``job_id`` (from ``new_job_id``) lets a caller name the job before it exists, so it
        can submit again after a crash (see ``submit``); ``sweep_id`` marks a sweep's trial.
        """
        if job_id is not None and not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        if self.count(RunState.QUEUED) >= self.max_queued:
            raise QueueFull(self.max_queued)
        return Job(
            id=job_id or new_job_id(),
            state=RunState.QUEUED,
            params=params,
            progress=Progress(epoch=0, epochs=params.epochs),
            created_at=utc_now(),
            sweep_id=sweep_id,
        )

    def record(self, job: Job) -> None:
        """Write a new job's record, then forget the oldest finished jobs beyond the bound."""
        self.files.write(job)
        finished = [job for job in self.files.records() if job.state.finished]  # oldest first
        for old in finished[: max(0, len(finished) - self.keep_finished)]:
            self.files.record_path(old.id).unlink(missing_ok=True)  # gone for readers first
            shutil.rmtree(self.files.job_dir(old.id), ignore_errors=True)
            fence.forget(self.store, old.params.model_name, old.id)
            _log.info("job %s forgotten: more than %d finished jobs", old.id, self.keep_finished)
        _log.info("job %s queued: %s", job.id, job.params.model_dump_json())

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """Record a new QUEUED job (bound checked under the local lock).

        A job id the book already has returns that job unchanged: submitting a named job
        again never makes a second one.
        """
        with self.lock():
            if job_id is not None and (existing := self.files.read(job_id)) is not None:
                return existing
            job = self.new_job(params, job_id=job_id, sweep_id=sweep_id)
            self.record(job)
        return job

    # --- read ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job as it is now (a RUNNING job's progress from its process's report)."""
        record = self.stored(job_id)
        if record.state is RunState.RUNNING:
            epoch = self.files.read_report(job_id).last_epoch
            if epoch > record.progress.epoch:
                progress = Progress(epoch=epoch, epochs=record.progress.epochs)
                return record.model_copy(update={"progress": progress})
        return record

    def list(self) -> builtins.list[Job]:
        """Every job, newest first."""
        jobs = [
            self.get(job.id) if job.state is RunState.RUNNING else job
            for job in self.files.records()
        ]
        return sorted(jobs, key=lambda job: (job.created_at, job.id), reverse=True)

    def unfinished(self) -> builtins.list[Job]:
        """QUEUED and RUNNING jobs, oldest first."""
        jobs = (job for job in self.files.records() if not job.state.finished)
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    def count(self, state: RunState) -> int:
        return self.counts()[state]

    def counts(self) -> dict[RunState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        return dict.fromkeys(RunState, 0) | Counter(job.state for job in self.files.records())

    def epochs_since(self, job_id: str, after: int) -> builtins.list[dict[str, float | None]]:
        """Finished epochs numbered above ``after``: {"epoch", "loss", "val_loss"} each."""
        self.stored(job_id)
        return epoch_rows(self.files.read_report(job_id), after)

    def stored(self, job_id: str) -> Job:
        """The job's record as stored, without its process's progress (JobNotFound when gone)."""
        record = self.files.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def progress_tail(self, job_id: str) -> ProgressTail:
        """The job's progress file, to read as it grows (``epoch_rows`` of each read)."""
        return ProgressTail(self.files.progress_path(job_id))

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a figure of the job is (``loss.png``, ``fit.png``), once it is drawn."""
        self.stored(job_id)
        path = self.files.job_dir(job_id) / name
        if name not in ARTIFACT_NAMES or not path.is_file():
            raise PlotNotFound(job_id, name)
        return path

    # --- cancel (asked by the API, carried out by the runner) -----------------------------

    def request_cancel(self, job_id: str) -> Job:
        """Leave a cancel request for the runner; raise JobAlreadyFinished when it ended."""
        record = self.stored(job_id)
        if record.state.finished:
            raise JobAlreadyFinished(record)
        path = self.files.cancel_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        _log.info("job %s cancel requested", job_id)
        return record

    def cancel_requested(self, job_id: str) -> bool:
        return self.files.cancel_path(job_id).exists()

    def cancelled_or_running(self, job_id: str) -> Job:
        """The job as it is after a cancel request; raise JobAlreadyFinished when it ended
        otherwise than CANCELLED (it finished before the request was seen: it keeps that)."""
        job = self.get(job_id)
        if job.state.finished and job.state is not RunState.CANCELLED:
            raise JobAlreadyFinished(job)
        return job

    # --- the runner's state changes: the only writes after submit --------------------------

    def start(self, job_id: str) -> Job | None:
        """QUEUED -> RUNNING; None when the job is no longer QUEUED."""
        record = self._move(job_id, RunState.RUNNING, lambda _: {"started_at": utc_now()})
        if record is not None:
            _log.info("job %s started", job_id)
        return record

    def requeue(self, job_id: str, reason: str) -> Job | None:
        """RUNNING -> QUEUED for a job whose process is gone by no doing of its own (its
        runner stopped or was lost): started again, it resumes from its checkpoint. None
        when the job is no longer RUNNING."""
        record = self._move(job_id, RunState.QUEUED, lambda old: {"resumes": old.resumes + 1})
        if record is not None:
            _log.info("job %s queued again (%s): it resumes from its checkpoint", job_id, reason)
        return record

    def _move(
        self, job_id: str, state: RunState, update: Callable[[Job], dict[str, Any]]
    ) -> Job | None:
        with self.lock():
            record = self.files.read(job_id)
            if record is None or not may_move(JOB_MOVES, record.state, state):
                return None
            record = record.model_copy(update={"state": state, **update(record)})
            self.files.write(record)
        return record

    def finish(self, job_id: str, ending: Ending, *, only_if: RunState | None = None) -> Job | None:
        """Fence the job's publishing, record its final state, tell the listeners.

        A version the job published before it was stopped makes it SUCCEEDED whatever the
        ending; otherwise the ending decides, and for a process that ended by itself its
        own report. Return None when the job was final already (or not in ``only_if``).
        """
        with self.lock():
            record = self.files.read(job_id)
            if record is None or record.state.finished or only_if not in (None, record.state):
                return None
            model_name = record.params.model_name
            report = self.files.read_report(job_id)
            result = report.result or {}
            if result.get("result") != "succeeded":
                fence.revoke(self.store, model_name, job_id)
            said = result.get("result") if ending.kind == "exited" else None
            published = fence.published_version(
                self.store, model_name, job_id, result.get("version")
            )
            error: str | None = None
            update: dict[str, Any] = {"finished_at": utc_now()}
            if report.epochs:
                update["progress"] = Progress(epoch=report.last_epoch, epochs=record.params.epochs)
            if published is not None:
                state, end = RunState.SUCCEEDED, EndReason.PUBLISHED
                update["model_version"] = published[0]
                update["metrics"] = finite_metrics(result.get("metrics")) or published[1]
            elif ending.kind == "cancelled" or said == "cancelled":
                state, end = RunState.CANCELLED, EndReason.CANCELLED
            elif ending.kind == "time_limit":
                state, end = RunState.FAILED, EndReason.TIME_LIMIT
                error = time_limit_error(record.params)
            elif said == "failed":
                state, end, error = RunState.FAILED, _reported_end(result), str(result.get("error"))
            else:
                state, end = RunState.FAILED, ending.end
                error = ending.reason or "training ended early"
            update.update(state=state, end_reason=end, error=error)
            update["started_at"] = record.started_at or update["finished_at"]
            record = record.model_copy(update=update)
            self.files.write(record)
            with contextlib.suppress(OSError):  # a final job never resumes
                self.files.checkpoint_path(job_id).unlink(missing_ok=True)
            if self.slots is not None:
                self.slots.release(job_id)
        outcome = record.error or (record.model_version and f"version {record.model_version}")
        _log.info("job %s %s%s", job_id, record.state, f": {outcome}" if outcome else "")
        for listener in self.on_finished:  # the one place a job's end is observed
            try:
                listener(record)
            except Exception:
                _log.exception("job %s: a listener of finished jobs failed", job_id)
        return record


def time_limit_error(params: TrainingParams) -> str:
    return (
        f"time limit exceeded: the job ran longer than max_train_seconds="
        f"{params.max_train_seconds} s and was stopped; nothing was published"
    )


def _reported_end(result: dict[str, Any]) -> EndReason:
    """Why the job's process says it failed (its ``end``), or, from a process of an older
    version that wrote none, as its error words it."""
    try:
        return EndReason(str(result.get("end")))
    except ValueError:
        return inferred_end(RunState.FAILED, str(result.get("error"))) or EndReason.ERROR
