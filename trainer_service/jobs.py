"""The job book: submit, look up, list and cancel training jobs kept on the shared store.

Any gunicorn worker of any trainer replica answers the same because the store is the only
state. Layout under ``<store>/jobs/``::

    <id>.json            the record (``JobRecord``), replaced atomically on every change
    <id>/epochs.jsonl    per-epoch history {"epoch", "loss", "val_loss"}, appended by the runner
    <id>/loss.png        the figures, drawn by the training code into ``<id>/``
    <id>/fit.png
    queue/<id>           empty marker of a QUEUED job; the queue bound counts these
    running/<id>         the same marker once a dispatcher claimed the job (a rename: one wins)
    <id>.cancel          a cancel request for a RUNNING job, honoured by the runner that owns it
    .lock                the lock every change of state is made under

Job ids look like ``20261129T051500Z-3f9a1c2b``: URL-safe, sorted by creation time; a string
of any other shape is an unknown job, so no request ever builds a path from client text.
A RUNNING job's record carries a lease (host, pid, runner id, heartbeat); see ``leases``.

Finished jobs are history: the book keeps the newest ``keep_finished`` of them and forgets
older ones (record, epochs and figures) when a job is submitted, so the folder, every
listing and every metrics scrape stay bounded however long the service runs. The models
those jobs published stay: versions are the store's, not the job book's.
"""

from __future__ import annotations

import builtins
import logging
import shutil
import time
from pathlib import Path

from squarenet.store import ModelStore
from trainer_service.errors import JobAlreadyFinished, JobNotFound, PlotNotFound, QueueFull
from trainer_service.job_records import (
    ARTIFACT_NAMES,
    Job,
    JobFiles,
    JobRecord,
    JobState,
    Progress,
    finite_or_none,
    is_job_id,
    new_job_id,
    utc_now,
)
from trainer_service.params import TrainingParams

__all__ = ["Job", "JobBook", "JobState", "Progress"]

DEFAULT_MAX_QUEUED = 16
DEFAULT_KEEP_FINISHED = 1000
_log = logging.getLogger(__name__)
_CANCEL_POLL_SECONDS = 0.05


class JobBook:
    """What the REST layer asks about jobs; the dispatcher does the running."""

    def __init__(
        self,
        store: ModelStore,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        keep_finished: int = DEFAULT_KEEP_FINISHED,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        if keep_finished < 1:
            raise ValueError("keep_finished must be at least 1")
        self.store = store
        self.max_queued = max_queued
        self.keep_finished = keep_finished
        self.files = JobFiles(store)

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """Record a new QUEUED job; raise QueueFull when ``max_queued`` jobs wait already.

        A caller that names the job (``job_id``, from ``new_job_id``) may submit again after
        a crash: an id the book already has returns that job unchanged, never a second one.
        ``sweep_id`` marks the job as a trial of that sweep.
        """
        with self.files.lock():
            if job_id is not None:
                existing = self.files.read(job_id)
                if existing is not None:
                    return existing.job
                if not is_job_id(job_id):
                    raise ValueError(f"not a job id: {job_id!r}")
            if len(self.files.queued_ids()) >= self.max_queued:
                raise QueueFull(self.max_queued)
            record = JobRecord(
                id=job_id or new_job_id(),
                state=JobState.QUEUED,
                params=params,
                progress=Progress(epoch=0, epochs=params.epochs),
                created_at=utc_now(),
                sweep_id=sweep_id,
            )
            self.files.write(record)
            (self.files.queue_dir / record.id).touch()
            self._forget_oldest_finished()
        _log.info("job %s queued: %s", record.id, params.model_dump_json())
        return record.job

    def _forget_oldest_finished(self) -> None:
        """Delete the oldest finished jobs beyond ``keep_finished`` (call with the lock held).

        Ids sort by creation time, so the oldest come first; the count of jobs not finished
        comes from the queue and running markers, so a submit usually reads one record.
        """
        ids = self.files.record_ids()
        unfinished = len(self.files.queued_ids()) + len(self.files.running_ids())
        excess = len(ids) - unfinished - self.keep_finished
        for job_id in ids:
            if excess <= 0:
                return
            record = self.files.read(job_id)
            if record is not None and not record.state.finished:
                continue
            self.files.record_path(job_id).unlink(missing_ok=True)  # gone for readers first
            self.files.cancel_path(job_id).unlink(missing_ok=True)
            shutil.rmtree(self.files.artifacts_dir(job_id), ignore_errors=True)
            _log.info("job %s forgotten: more than %d finished jobs", job_id, self.keep_finished)
            excess -= 1

    def get(self, job_id: str) -> Job:
        """The job as it is now; raise JobNotFound for unknown or malformed ids."""
        return self._record(job_id).job

    def list(self) -> list[Job]:
        """Every job, newest first."""
        records = [self.files.read(job_id) for job_id in self.files.record_ids()]
        jobs = [record.job for record in records if record is not None]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs

    def cancel(self, job_id: str, *, timeout: float = 10.0) -> Job:
        """Cancel a job and return it CANCELLED.

        A QUEUED job is cancelled at once. For a RUNNING job a request is left on the store
        and this waits until the runner that owns it has killed the training process and
        recorded CANCELLED. Raise JobAlreadyFinished when the job ended otherwise first.
        If the runner does not answer within ``timeout`` the request stays in place (the
        runner honours it later) and the job is returned as it is.
        """
        with self.files.lock():
            record = self._record(job_id)
            if record.state.finished:
                raise JobAlreadyFinished(record.job)
            marker = self.files.queue_dir / job_id
            try:
                marker.unlink()
            except FileNotFoundError:
                self.files.cancel_path(job_id).touch()  # claimed: its runner must stop it
            else:
                record = record.model_copy(
                    update={"state": JobState.CANCELLED, "finished_at": utc_now()}
                )
                self.files.write(record)
                _log.info("job %s cancelled while queued", job_id)
                return record.job
        _log.info("job %s cancel requested", job_id)
        deadline = time.monotonic() + timeout
        while True:
            record = self._record(job_id)
            if record.state is JobState.CANCELLED:
                return record.job
            if record.state.finished:
                raise JobAlreadyFinished(record.job)
            if time.monotonic() >= deadline:
                return record.job
            time.sleep(_CANCEL_POLL_SECONDS)

    def epochs_since(self, job_id: str, after: int) -> builtins.list[dict[str, float | None]]:
        """Finished epochs numbered above ``after``: {"epoch", "loss", "val_loss"} each."""
        self._record(job_id)
        rows: builtins.list[dict[str, float | None]] = []
        for row in self.files.read_epochs(job_id):
            epoch = row.get("epoch")
            if not isinstance(epoch, int) or epoch <= after:
                continue
            rows.append(
                {
                    "epoch": epoch,
                    "loss": _number(row.get("loss")),
                    "val_loss": _number(row.get("val_loss")),
                }
            )
        return rows

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a figure of the job is (``loss.png``, ``fit.png``), once it is drawn."""
        self._record(job_id)
        if name not in ARTIFACT_NAMES:
            raise PlotNotFound(job_id, name)
        path = self.files.artifacts_dir(job_id) / name
        if not path.is_file():
            raise PlotNotFound(job_id, name)
        return path

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        tally = dict.fromkeys(JobState, 0)
        for job_id in self.files.record_ids():
            record = self.files.read(job_id)
            if record is not None:
                tally[record.state] += 1
        return tally

    def _record(self, job_id: str) -> JobRecord:
        record = self.files.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return finite_or_none(float(value))
