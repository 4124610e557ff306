"""The runner's side of the job book: claim, heartbeat, finish, and reap lost jobs.

A RUNNING job's record holds a lease: the runner's host, pid, a per-start runner id and a
heartbeat time. Liveness is the heartbeat, because replicas on different nodes share the
store but not their process tables. On the runner's own host a lease whose pid is gone (or
is our own pid under another runner id, as after a container restart) is dead at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from squarenet.store import TMP_PREFIX, BrokenVersion, ModelStore
from trainer_service.runner.records import (
    JobFiles,
    JobRecord,
    JobState,
    Lease,
    Progress,
    format_time,
    parse_time,
    utc_now,
)

_log = logging.getLogger(__name__)
_STAGING_OF_JOB = re.compile(r"^" + re.escape(TMP_PREFIX) + r"([0-9]{8}T[0-9]{6}Z-[0-9a-f]{8})-")
_PUBLISHED_LOOKBACK = 20


@dataclass(frozen=True)
class Runner:
    """One dispatcher start: where it runs and the id that makes its leases its own."""

    host: str
    pid: int
    runner_id: str

    @classmethod
    def here(cls) -> Runner:
        """This process, with a fresh runner id."""
        return cls(host=socket.gethostname(), pid=os.getpid(), runner_id=secrets.token_hex(8))

    def lease(self) -> Lease:
        """A lease with a heartbeat of now."""
        return Lease(host=self.host, pid=self.pid, runner_id=self.runner_id, heartbeat_at=utc_now())

    def owns(self, record: JobRecord) -> bool:
        """True when the record is RUNNING under this runner's lease."""
        return (
            record.state is JobState.RUNNING
            and record.lease is not None
            and record.lease.runner_id == self.runner_id
        )


class RunnerBook:
    """State changes a dispatcher makes, each under the jobs lock."""

    def __init__(self, store: ModelStore, runner: Runner) -> None:
        self.store = store
        self.runner = runner
        self.files = JobFiles(store)

    def claim_next(self) -> JobRecord | None:
        """Take the oldest QUEUED job and mark it RUNNING under our lease, or return None."""
        if not self.files.queued_ids():
            return None  # the common case, answered without taking the lock
        with self.files.lock():
            waiting = []
            for job_id in self.files.queued_ids():
                record = self.files.read(job_id)
                if record is None or record.state is not JobState.QUEUED:
                    # left over from a crash: nothing to run
                    (self.files.queue_dir / job_id).unlink(missing_ok=True)
                else:
                    waiting.append(record)
            waiting.sort(key=lambda queued: (queued.created_at, queued.id))
            for queued in waiting:
                job_id = queued.id
                marker = self.files.queue_dir / job_id
                try:
                    os.rename(marker, self.files.running_dir / job_id)
                except FileNotFoundError:
                    continue  # another runner renamed it first
                record = queued.model_copy(
                    update={
                        "state": JobState.RUNNING,
                        "started_at": utc_now(),
                        "lease": self.runner.lease(),
                    }
                )
                self.files.write(record)
                _log.info("job %s claimed by %s pid %d", job_id, self.runner.host, self.runner.pid)
                return record
        return None

    def heartbeat(self, job_id: str, progress: Progress | None = None) -> JobRecord | None:
        """Renew our lease (and progress); None when the job is no longer ours to run."""
        with self.files.lock():
            record = self.files.read(job_id)
            if record is None or not self.runner.owns(record):
                return None
            update: dict[str, Any] = {"lease": self.runner.lease()}
            if progress is not None:
                update["progress"] = progress
            record = record.model_copy(update=update)
            self.files.write(record)
            return record

    def cancel_requested(self, job_id: str) -> bool:
        """True when a client asked to cancel this job."""
        return self.files.cancel_path(job_id).exists()

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        error: str | None = None,
        metrics: dict[str, float] | None = None,
        model_version: int | None = None,
        progress: Progress | None = None,
    ) -> JobRecord | None:
        """Record the final state of a job we own, drop its markers and staging folders."""
        with self.files.lock():
            record = self.files.read(job_id)
            if record is None or not self.runner.owns(record):
                return None
            update: dict[str, Any] = {
                "state": state,
                "error": error,
                "metrics": metrics,
                "model_version": model_version,
                "finished_at": utc_now(),
                "lease": None,
            }
            if progress is not None:
                update["progress"] = progress
            record = record.model_copy(update=update)
            self.files.write(record)
            self._drop_markers(job_id)
        self.discard_staging(record)
        _log.info(
            "job %s %s%s",
            job_id,
            state,
            f" version {model_version}" if model_version else f": {error}" if error else "",
        )
        return record

    def reap(self, stale_after: float) -> list[JobRecord]:
        """End claimed jobs whose runner is gone; return them.

        A lease on another host is lost when its heartbeat is older than ``stale_after``
        seconds; on this host as soon as its pid is gone. Such a job ends FAILED with the
        reason, unless it had published its version already (SUCCEEDED) or a cancel was
        waiting for it (CANCELLED).
        """
        now = datetime.now(UTC)
        ended = []
        with self.files.lock():
            for job_id in self.files.running_ids():
                record = self.files.read(job_id)
                if record is None or record.state.finished:
                    self._drop_markers(job_id)
                    continue
                reason = self._loss_reason(record, now, stale_after)
                if reason is None:
                    continue
                update: dict[str, Any] = {"finished_at": format_time(now), "lease": None}
                published = self.published_version(record)
                if published is not None:
                    update.update(
                        state=JobState.SUCCEEDED, model_version=published[0], metrics=published[1]
                    )
                elif self.cancel_requested(job_id):
                    update.update(state=JobState.CANCELLED)
                else:
                    update.update(state=JobState.FAILED, error=reason)
                record = record.model_copy(update=update)
                self.files.write(record)
                self._drop_markers(job_id)
                ended.append(record)
        for record in ended:
            self.discard_staging(record)
            _log.warning("job %s %s: %s", record.id, record.state, reason_or_outcome(record))
        return ended

    def sweep_staging(self) -> None:
        """Remove staging folders left by jobs that are no longer running."""
        for model_name in self.store.model_names():
            try:
                entries = list(self.store.model_dir(model_name).iterdir())
            except OSError:
                continue
            for entry in entries:
                match = _STAGING_OF_JOB.match(entry.name)
                if match is None:
                    continue  # not a job's: some other publisher's, leave it alone
                record = self.files.read(match.group(1))
                if record is None or record.state is not JobState.RUNNING:
                    removed = self.store.discard_staging(model_name, tag=match.group(1))
                    for path in removed:
                        _log.info("job %s: removed stale staging %s", match.group(1), path.name)

    def discard_staging(self, record: JobRecord) -> None:
        """Remove what the job's training process left half-written."""
        try:
            removed = self.store.discard_staging(record.params.model_name, tag=record.id)
        except (ValueError, OSError) as exc:
            _log.warning("job %s: could not discard staging: %s", record.id, exc)
            return
        for path in removed:
            _log.info("job %s: removed staging %s", record.id, path.name)

    def published_version(self, record: JobRecord) -> tuple[int, dict[str, float]] | None:
        """The version this job published, if it got that far before it was stopped."""
        model_name = record.params.model_name
        try:
            versions = self.store.list_versions(model_name)
        except (ValueError, OSError):
            return None
        for version in reversed(versions[-_PUBLISHED_LOOKBACK:]):
            try:
                metadata = self.store.read_metadata(model_name, version)
            except BrokenVersion:
                continue
            if metadata.get("job_id") == record.id:
                raw = metadata.get("metrics")
                metrics = raw if isinstance(raw, dict) else {}
                return version, {
                    str(k): float(v)
                    for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
        return None

    def _loss_reason(self, record: JobRecord, now: datetime, stale_after: float) -> str | None:
        lease = record.lease
        if record.state is JobState.QUEUED or lease is None:
            return "trainer process lost before the job started"
        if lease.runner_id == self.runner.runner_id:
            return None
        if lease.host == self.runner.host and (
            lease.pid == self.runner.pid or not _pid_alive(lease.pid)
        ):
            return f"trainer process lost: pid {lease.pid} on {lease.host} is gone"
        try:
            heartbeat = parse_time(lease.heartbeat_at)
        except ValueError:
            return "trainer process lost: unreadable heartbeat"
        if now - heartbeat > timedelta(seconds=stale_after):
            return f"trainer process lost: no heartbeat since {lease.heartbeat_at}"
        return None

    def _drop_markers(self, job_id: str) -> None:
        for path in (self.files.running_dir / job_id, self.files.cancel_path(job_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def reason_or_outcome(record: JobRecord) -> str:
    """One phrase for the log line of a job that just ended."""
    if record.model_version is not None:
        return f"version {record.model_version}"
    return record.error or "no error"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
