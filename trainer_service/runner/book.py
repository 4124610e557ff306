"""The job book: every job's record on the store, and the one place its state changes.

Readers (the REST API, any worker of any replica) read records and the progress files the
jobs' processes write. A record is written at submit (QUEUED) and then only by ``start``,
``requeue`` and ``finish``, which the executor's runner calls: the local runner process, or the one trainer
replica elected to finalize Kubernetes Jobs. ``finish`` is where a job's end is decided and
observed: it fences the job's publishing (``fence``), settles its final state, and tells
the ``on_finished`` listeners (a sweep controller, for one).

Finished jobs are history: the book keeps the newest ``keep_finished`` of them and forgets
older ones (record, progress, figures) when a job is submitted. The models those jobs
published stay: versions are the store's, not the job book's.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
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


DEFAULT_MAX_QUEUED = 16
DEFAULT_KEEP_FINISHED = 1000
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
        max_queued: int = DEFAULT_MAX_QUEUED,
        keep_finished: int = DEFAULT_KEEP_FINISHED,
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
        # whether this process may still change job and sweep states: always, except in the
        # kubernetes finalizer, which puts its Lease check here (``Finalizer.holds_lease``)
        # so that the sweep pass it runs (a listener of ``finish``, or its periodic tick)
        # stops releasing trials and writing sweeps once it may have lost the Lease
        self.still_leading: Callable[[], bool] = _always

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise state changes between the processes and threads of one machine (``local``).

        The ``kubernetes`` executor has a single writer of states (the elected finalizer)
        and takes no lock on a shared volume.
        """
        if not self.local_lock:
            yield
            return
        with local_lock(self.files.root / BOOK_LOCK):
            yield

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
        self._forget_oldest_finished()
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

    def _forget_oldest_finished(self) -> None:
        records = [job for job_id in self.files.record_ids() if (job := self.files.read(job_id))]
        finished = [job for job in records if job.state.finished]  # oldest first
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self.files.record_path(job.id).unlink(missing_ok=True)  # gone for readers first
            shutil.rmtree(self.files.job_dir(job.id), ignore_errors=True)
            fence.forget(self.store, job.params.model_name, job.id)
            _log.info("job %s forgotten: more than %d finished jobs", job.id, self.keep_finished)

    # --- read ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job as it is now (a RUNNING job's progress from its process's report)."""
        record = self._record(job_id)
        if record.state is RunState.RUNNING:
            epoch = self.files.read_report(job_id).last_epoch
            if epoch > record.progress.epoch:
                progress = Progress(epoch=epoch, epochs=record.progress.epochs)
                return record.model_copy(update={"progress": progress})
        return record

    def list(self) -> builtins.list[Job]:
        """Every job, newest first."""
        jobs = [job for job_id in self.files.record_ids() if (job := self.files.read(job_id))]
        jobs = [self.get(job.id) if job.state is RunState.RUNNING else job for job in jobs]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs

    def unfinished(self) -> builtins.list[Job]:
        """QUEUED and RUNNING jobs, oldest first."""
        jobs = [job for job_id in self.files.record_ids() if (job := self.files.read(job_id))]
        return sorted(
            (job for job in jobs if not job.state.finished),
            key=lambda job: (job.created_at, job.id),
        )

    def count(self, state: RunState) -> int:
        """How many jobs are in ``state``."""
        return self.counts()[state]

    def counts(self) -> dict[RunState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        tally = dict.fromkeys(RunState, 0)
        for job_id in self.files.record_ids():
            record = self.files.read(job_id)
            if record is not None:
                tally[record.state] += 1
        return tally

    def epochs_since(self, job_id: str, after: int) -> builtins.list[dict[str, float | None]]:
        """Finished epochs numbered above ``after``: {"epoch", "loss", "val_loss"} each."""
        self._record(job_id)
        return epoch_rows(self.files.read_report(job_id), after)

    def stored(self, job_id: str) -> Job:
        """The job's record as stored, without its process's progress (JobNotFound when gone):
        its state and outcome, for readers that need no epoch count."""
        return self._record(job_id)

    def progress_tail(self, job_id: str) -> ProgressTail:
        """The job's progress file, to read as it grows (``epoch_rows`` of each read)."""
        return ProgressTail(self.files.progress_path(job_id))

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a figure of the job is (``loss.png``, ``fit.png``), once it is drawn."""
        self._record(job_id)
        path = self.files.job_dir(job_id) / name
        if name not in ARTIFACT_NAMES or not path.is_file():
            raise PlotNotFound(job_id, name)
        return path

    def _record(self, job_id: str) -> Job:
        record = self.files.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    # --- cancel (asked by the API, carried out by the runner) -----------------------------

    def request_cancel(self, job_id: str) -> Job:
        """Leave a cancel request for the runner; raise JobAlreadyFinished when it ended."""
        record = self._record(job_id)
        if record.state.finished:
            raise JobAlreadyFinished(record)
        path = self.files.cancel_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        _log.info("job %s cancel requested", job_id)
        return record

    def cancel_requested(self, job_id: str) -> bool:
        """True when a client asked to cancel this job."""
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
        with self.lock():
            record = self.files.read(job_id)
            if record is None or not may_move(JOB_MOVES, record.state, RunState.RUNNING):
                return None
            record = record.model_copy(update={"state": RunState.RUNNING, "started_at": utc_now()})
            self.files.write(record)
        _log.info("job %s started", job_id)
        return record

    def requeue(self, job_id: str, reason: str) -> Job | None:
        """RUNNING -> QUEUED for a job whose process is gone by no doing of its own (its
        runner stopped or was lost): started again, it resumes from its checkpoint. None
        when the job is no longer RUNNING."""
        with self.lock():
            record = self.files.read(job_id)
            if record is None or not may_move(JOB_MOVES, record.state, RunState.QUEUED):
                return None
            record = record.model_copy(
                update={"state": RunState.QUEUED, "resumes": record.resumes + 1}
            )
            self.files.write(record)
        _log.info("job %s queued again (%s): it resumes from its checkpoint", job_id, reason)
        return record

    def finish(self, job_id: str, ending: Ending, *, only_if: RunState | None = None) -> Job | None:
        """Fence the job's publishing, record its final state, tell the listeners.

        A version the job published before it was stopped makes it SUCCEEDED whatever the
        ending; otherwise the ending decides, and for a process that ended by itself its
        own report. Return None when the job was final already (or not in ``only_if``).
        """
        with self.lock():
            record = self.files.read(job_id)
            if record is None or record.state.finished:
                return None
            if only_if is not None and record.state is not only_if:
                return None
            model_name = record.params.model_name
            report = self.files.read_report(job_id)
            result = report.result or {}
            if result.get("result") != "succeeded":
                fence.revoke(self.store, model_name, job_id)
            update: dict[str, Any] = {"finished_at": utc_now()}
            if report.epochs:
                update["progress"] = Progress(epoch=report.last_epoch, epochs=record.params.epochs)
            published = fence.published_version(
                self.store, model_name, job_id, result.get("version")
            )
            if published is not None:
                update.update(
                    state=RunState.SUCCEEDED, end_reason=EndReason.PUBLISHED,
                    model_version=published[0],
                )  # fmt: skip
                update["metrics"] = _metrics(result.get("metrics")) or published[1]
            elif ending.kind == "cancelled" or (
                result.get("result") == "cancelled" and ending.kind == "exited"
            ):
                update.update(state=RunState.CANCELLED, end_reason=EndReason.CANCELLED)
            elif ending.kind == "time_limit":
                update.update(
                    state=RunState.FAILED, error=time_limit_error(record.params),
                    end_reason=EndReason.TIME_LIMIT,
                )  # fmt: skip
            elif result.get("result") == "failed" and ending.kind == "exited":
                error = str(result.get("error"))
                update.update(state=RunState.FAILED, error=error, end_reason=_reported_end(result))
            else:
                update.update(
                    state=RunState.FAILED, error=ending.reason or "training ended early",
                    end_reason=ending.end,
                )  # fmt: skip
            if record.started_at is None:
                update["started_at"] = update["finished_at"]
            record = record.model_copy(update=update)
            self.files.write(record)
            with contextlib.suppress(OSError):  # a final job never resumes
                self.files.checkpoint_path(job_id).unlink(missing_ok=True)
            if self.slots is not None:
                self.slots.release(job_id)
        outcome = record.error or (
            f"version {record.model_version}" if record.model_version else ""
        )
        _log.info("job %s %s%s", job_id, record.state, f": {outcome}" if outcome else "")
        for listener in self.on_finished:  # the one place a job's end is observed
            try:
                listener(record)
            except Exception:
                _log.exception("job %s: a listener of finished jobs failed", job_id)
        return record


def _always() -> bool:
    return True


def time_limit_error(params: TrainingParams) -> str:
    """The error of a job stopped by its time limit."""
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


def _metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, value in raw.items() if (v := finite_or_none(value)) is not None}
